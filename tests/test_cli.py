"""The training CLI and config: typed dotted overrides, helpful errors, --help."""
import subprocess
import sys
from pathlib import Path

import pytest

from tnl_jax import train_config

ROOT = Path(__file__).resolve().parent.parent


def test_dotted_overrides_are_typed():
    cfg = train_config.load(None, ["model.decoder_layers=2", "lr=1e-3", "mesh.fsdp=2",
                                   "model.linear_use_lrpe_list=[1, 0]", "init_from=null",
                                   "model.attention_backend=xla", "run_dir=runs/x"])
    assert cfg.model.decoder_layers == 2 and isinstance(cfg.lr, float) and cfg.lr == 1e-3
    assert cfg.mesh.fsdp == 2 and cfg.model.linear_use_lrpe_list == (1, 0)
    assert cfg.init_from is None and cfg.model.attention_backend == "xla"
    assert cfg.run_dir == "runs/x"


def test_model_fields_change_together():
    """Width and heads changed in one command are validated as a pair, not one at a time."""
    cfg = train_config.load(None, ["model.decoder_embed_dim=30", "model.decoder_attention_heads=3"])
    assert (cfg.model.decoder_embed_dim, cfg.model.decoder_attention_heads) == (30, 3)


@pytest.mark.parametrize("override, message", [
    ("model.decoder_layer=2", "nearest valid key: 'model.decoder_layers'"),
    ("stpes=3", "nearest valid key: 'steps'"),
    ("mesh.fsdpp=2", "nearest valid key: 'mesh.fsdp'"),
    ("steps=many", "steps: expected an integer"),
    ("model.no_scale_embedding=3", "expected true/false"),
    ("model=3", "is a group"),
    ("steps", "expected key=value"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_config.load(None, [override])


def test_every_preset_loads():
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(presets) >= 2
    for preset in presets:
        cfg = train_config.load(preset)
        assert cfg.steps > 0 and cfg.batch_size > 0 and cfg.model.vocab_size > 0


def _cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_help_lists_every_key_with_its_default():
    out = _cli("--help")
    assert out.returncode == 0, out.stderr
    for key in train_config.all_keys_of(train_config.TrainConfig):
        assert f"  {key} " in out.stdout, key
    assert "model.decoder_layers" in out.stdout and "batch_size" in out.stdout


def test_unknown_key_fails_fast_with_the_nearest():
    out = _cli("model.decoder_layer=2")
    assert out.returncode == 2
    assert "model.decoder_layers" in out.stderr
