"""`python train.py` / `tnl-train`: --help, presets by name, errors that name the problem."""
import re
import subprocess
import sys
from importlib import metadata

import pytest

from tests.paths import ROOT
from tnl_jax.cli import train as train_cli
from tnl_jax.training import config as train_config


def test_help_of_the_checkout_script_lists_every_key_of_a_named_preset(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "tnl-1b", "--help"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for key in train_config.all_keys_of(train_config.TrainConfig):
        assert f"  {key} " in out.stdout, key
    assert re.search(r"run_dir +'runs/tnl-1b'", out.stdout) and "tnl-15b" in out.stdout


@pytest.mark.parametrize("argv, message", [
    (["model.decoder_layer=2"], "model.decoder_layers"),
    (["--config", "tnl-2b"], "presets: "),
])
def test_bad_arguments_fail_fast_naming_the_problem(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        train_cli.parse(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_presets_by_name_or_path():
    by_name = train_cli.parse(["--config", "tnl-385m", "steps=5"])
    assert by_name.steps == 5 and by_name.model.decoder_embed_dim == 1024
    from tnl_jax import presets
    assert train_cli.parse(["--config", str(presets.resolve("tnl-385m")), "steps=5"]) == by_name


def test_console_scripts_are_installed():
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts["tnl-train"] == "tnl_jax.cli.train:main"
    assert scripts["tnl-generate"] == "tnl_jax.cli.generate:main"
    assert scripts["tnl-convert"] == "tnl_jax.cli.convert:main"
