"""`python train.py` / `tnl-train`: --help, presets by name, errors that name the problem."""
import re
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

from tests.paths import ROOT
from tests.training.runs import TINY, TINY_RUN
from tnl_jax.cli import train as train_cli
from tnl_jax.config_help import field_at, help_of
from tnl_jax.training import config as train_config
from tnl_jax.training import loop


def test_help_of_the_checkout_script_lists_every_key_of_a_named_preset(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "tnl-1b", "--help"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for key in train_config.all_keys_of(train_config.TrainConfig):
        assert f"\n  {key} " in out.stdout, key
    # The preset's value (as YAML reads it), the description, what the check allows.
    text = unwrapped(out.stdout)
    assert re.search(r'run_dir +"runs/tnl-1b" +directory of the run', text)
    assert re.search(r"\n  steps +100000 +optimizer steps .*\[allowed: an integer in "
                     r"\[1, 2147483647\]", text)
    assert re.search(r"model.attention_backend +null +lightning attention", text)
    assert "tnl-15b" in out.stdout


def test_every_settable_key_has_a_one_line_description():
    for key in train_config.all_keys_of(train_config.TrainConfig):
        description = help_of(field_at(train_config.TrainConfig, key))
        assert description and "\n" not in description, key


def unwrapped(text: str) -> str:
    """The help's table with each key's wrapped lines joined into one."""
    return re.sub(r"\n {40,}", " ", text)


def allowed_in_help(cfg: train_config.TrainConfig) -> dict[str, str]:
    """Each key's ``[allowed: ...]`` text in ``describe(cfg)``."""
    text = unwrapped(train_config.describe(cfg))
    return {m[1]: m[2] for m in re.finditer(r"^  (\S+) .*\[allowed: (.*)\]$", text, re.M)}


def test_every_key_but_free_text_shows_what_its_check_allows():
    allowed = allowed_in_help(train_config.load(None))
    keys = set(train_config.all_keys_of(train_config.TrainConfig))
    assert keys - set(allowed) == {"sample_prompt"}  # Any text: no check to quote.


@pytest.mark.parametrize("override", [
    "steps=0", "lr=-0.5", "beta2=1.5", "eval_fraction=1", "mesh.fsdp=0", "tensorboard=maybe",
    "model.remat=everything", "model.chunk_size=24", "model.pad_token_id=384",
    "model.decoder_layers=0", "loss_chunk_tokens=-2", "model.dtype=int8",
])
def test_the_help_states_the_range_the_error_enforces(override, capsys):
    """A user who breaks a key's range is told what the help said it allows."""
    key = override.split("=")[0]
    shown = allowed_in_help(train_config.load(None))[key]
    with pytest.raises(SystemExit) as exit_:
        train_cli.parse([override])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and override.replace("model.", "").split("=")[0] in error
    assert shown in " ".join(error.split()), (shown, error)


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


def test_rerunning_a_finished_run_says_so_and_changes_nothing(tmp_path, tiny_run, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.dir, run_dir)
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    train_cli.main([*TINY, *TINY_RUN, f"run_dir={run_dir}"])
    out = capsys.readouterr().out.splitlines()
    finished = f"run_dir {run_dir} already finished at step 4 of 4; raise steps= to train further"
    assert out[-1] == finished and finished not in out[:-1]
    assert not any(line.startswith(("step ", "resumed", "sample:")) for line in out)
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


def test_a_run_past_its_steps_says_how_far_it_got(tmp_path):
    assert loop.already_finished(tmp_path, 7, 5) == (
        f"run_dir {tmp_path} is already at step 7, past steps=5; raise steps= above 7 to train "
        f"further")
