"""Every command of the README's shell blocks, as a user types it.

Each ``tnl-train`` line must parse into a valid config (its keys and ranges); the ones a
CPU can run are run in a folder laid out as the README assumes (a text corpus with a
SentencePiece model, ``.npy`` shards, a converted checkpoint, the finished tiny run at
``runs/tnl-tiny``), with ``steps=1`` and tnl-tiny's size and schedule cut to the
tests' (the only change). ``tnl-convert`` and ``tnl-generate`` lines run whole. Not run here: the set-up
lines (CI runs them: ``.ci/run``), ``hf download`` (the network), and what needs GPUs
or several hosts (their configs are still parsed).
"""
import os
import re
import shlex
import shutil

import numpy as np
import pytest

from tests.checkpoints.test_published import corpus, sentencepiece_model
from tests.paths import ROOT
from tests.training.runs import TINY
from tnl_jax.cli import convert, generate, train

SETUP = ("pip", "pytest", "python", "hf", "#SBATCH")
NEEDS_GPUS = ("tnl-1b", "tnl-7b", "tnl-385m")  # Presets a CPU test cannot train.


def readme_commands() -> list[list[str]]:
    """The README's shell commands: continuation lines joined, comments dropped,
    ``srun`` and environment assignments stripped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and (words[0] == "srun" or re.fullmatch(r"\w+=.*", words[0])):
                words = words[1:]
            if words and not words[0].startswith(SETUP):
                commands.append(words)
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_this_file_runs():
    programs = {c[0] for c in COMMANDS}
    assert programs == {"tnl-train", "tnl-convert", "tnl-generate"}, programs


@pytest.mark.parametrize("words", [c for c in COMMANDS if c[0] == "tnl-train"],
                         ids=lambda c: " ".join(c)[:60])
def test_every_training_command_is_a_valid_config(words, readme_folder, monkeypatch):
    monkeypatch.chdir(readme_folder)
    if words[1:] == ["--help"]:
        with pytest.raises(SystemExit) as stop:
            train.parse(words[1:])
        assert stop.value.code == 0
        return
    cfg = train.parse(words[1:])
    assert cfg.steps > 0 and cfg.run_dir


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory, tiny_run):
    """A folder as the README's commands assume it: corpus/, tokenizer.model, shards/,
    converted/ (the tiny run converted) and runs/tnl-tiny (the finished tiny run)."""
    tmp_path, rng = tmp_path_factory.mktemp("readme"), np.random.default_rng(7)
    (tmp_path / "corpus").mkdir()
    text = corpus(rng)
    for i in range(4):
        (tmp_path / "corpus" / f"part{i}.txt").write_text(text[i::4])
    (tmp_path / "tokenizer.model").write_bytes(sentencepiece_model(text))
    (tmp_path / "shards").mkdir()
    for i in range(3):
        stream = rng.integers(0, 256, 3000).astype(np.int32)
        stream[rng.integers(0, 3000, 20)] = 258  # The byte tokenizer's EOS.
        np.save(tmp_path / "shards" / f"shard{i}.npy", stream)
    (tmp_path / "runs").mkdir()
    shutil.copytree(tiny_run.dir, tmp_path / "runs" / "tnl-tiny")
    convert.main(["--from", str(tiny_run.dir), "--to", "converted", "--out",
                  str(tmp_path / "converted")])
    return tmp_path


def test_the_cpu_commands_run_as_written(readme_folder, monkeypatch, capsys):
    monkeypatch.chdir(readme_folder)
    # tnl-tiny cut to the tests' size and schedule: the shared tiny run's compiled step.
    small = [*TINY, "steps=1"]
    ran = []
    for words in COMMANDS:
        program, args = words[0], words[1:]
        if program == "tnl-train" and "--help" not in args and not any(
                p in args for p in NEEDS_GPUS) and not any("mesh." in a for a in args):
            warm = any(a.startswith("init_from") for a in args)  # Its model is the source's.
            train.main([*args, *[o for o in small if not (warm and o.startswith("model."))],
                        f"run_dir=runs/readme{len(ran)}"])
        elif program == "tnl-convert" and os.path.exists(args[args.index("--from") + 1]):
            convert.main(args[:-1] + [f"{args[-1].rstrip('/')}-readme"])
        elif program == "tnl-generate":
            generate.main([*args, "--max-new-tokens", "4"])
        else:
            continue
        ran.append(" ".join(words))
    printed = capsys.readouterr().out
    assert len(ran) >= 4, ran  # Two trainings, a conversion, a generation at least.
    assert "wrote" in printed
