"""A non-editable install carries the presets and the console scripts."""
import shutil
import subprocess
import sys
import zipfile

from tests.paths import ROOT
from tnl_jax import presets


def test_the_wheel_holds_the_presets_and_entry_points(tmp_path):
    source = tmp_path / "source"  # A copy: building writes build/ and *.egg-info/.
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("tnl_jax", "pallas_kernels"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", str(source), "-w", str(tmp_path / "wheel")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("tnl_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for preset in presets.names():
        assert f"tnl_jax/presets/{preset}.yaml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "tnl-train = tnl_jax.cli.train:main" in text and "tnl-generate" in text
    # TensorBoard's writer is an extra, not a dependency of the core install.
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    requires = [line for line in metadata.decode().splitlines() if "tensorboardx" in line.lower()]
    assert requires and all("extra ==" in line for line in requires), requires
    assert any('extra == "tensorboard"' in line for line in requires), requires
