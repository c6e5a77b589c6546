"""The cases of probe_edges.py: config files and overrides, the command lines, data."""
from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path
from typing import Any, Callable

from tests.training import runs


@dataclasses.dataclass
class Case:
    surface: str
    name: str
    call: Callable[[], Any]
    expect: str = "error"       # "error": must raise a clear error; "result": call judges.
    says: tuple[str, ...] = ()  # Words an error must hold (the key, the value).


TINY = [*runs.TINY, "tensorboard=false"]  # The tests' tiny model, rows of 64 bytes.


def load(*overrides: str, preset=None):
    from tnl_jax.training import config
    return config.load(preset, list(overrides))


def train(run_dir: Path, *overrides: str):
    """A tiny training run in this process (the loop as tnl-train calls it)."""
    from tnl_jax.cli.train import main
    main([*TINY, f"run_dir={run_dir}", *overrides])


@functools.lru_cache(maxsize=None)
def trained(scratch: Path) -> Path:
    """A finished tiny run of 4 steps, checkpoints at 2 and 4 (made once)."""
    run = scratch / "base-run"
    train(run, "steps=4", "checkpoint_every=2")
    return run


def copy_run(scratch: Path, name: str) -> Path:
    target = scratch / name
    shutil.copytree(trained(scratch), target, symlinks=True)
    return target


def yaml_file(scratch: Path, name: str, text: str | bytes) -> str:
    path = scratch / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def all_cases(scratch: Path) -> list[Case]:
    from tests.probes import probe_cases_files, probe_cases_arrays
    return [*config_cases(scratch), *probe_cases_files.cases(scratch),
            *probe_cases_arrays.cases(scratch)]


def config_cases(scratch: Path) -> list[Case]:
    c = []

    def bad(name, *overrides, says=()):
        c.append(Case("config", name, lambda: load(*overrides), says=says))

    bad("steps=1e3 (a float)", "steps=1e3", says=("steps",))
    bad("steps=.inf", "steps=.inf", says=("steps",))
    bad("lr=.nan", "lr=.nan", says=("lr",))
    bad("lr=1e999 (YAML inf)", "lr=1e999", says=("lr",))
    bad("lr=1e-400 (underflows to 0)", "lr=1e-400", says=("lr",))
    bad("steps=2**63 (past int64)", f"steps={2**63}", says=("steps",))
    bad("steps=2**40 (past the int32 step counter)", f"steps={2**40}", says=("steps",))
    bad("seed=2**64", f"seed={2**64}", says=("seed",))
    bad("seed=-2**70", f"seed={-2**70}", says=("seed",))
    bad("batch_size=true", "batch_size=true", says=("batch_size",))
    bad("run_dir= (empty)", "run_dir=", says=("run_dir",))
    bad("run_dir=null", "run_dir=null", says=("run_dir",))
    bad("model.dtype=int8", "model.dtype=int8", says=("model.dtype",))
    bad("model.decoder_layers=0", "model.decoder_layers=0", says=("decoder_layers",))
    bad("unicode key stéps=3", "stéps=3", says=("stéps",))
    bad("empty key =3", "=3")
    bad("no '=' at all", "steps")
    bad("group set to a scalar model=3", "model=3", says=("model",))
    bad("mesh.data=-2", "mesh.data=-2", says=("mesh.data",))
    bad("eval_fraction=1.5", "eval_fraction=1.5", says=("eval_fraction",))
    bad("warmup=-1", "warmup=-1", says=("warmup",))
    bad("keep_checkpoints=0", "keep_checkpoints=0", says=("keep_checkpoints",))
    bad("checkpoint_every=0", "checkpoint_every=0", says=("checkpoint_every",))
    c.append(Case("config", "seq_len=1 (rows are seq_len + 1 tokens: one target each)",
                  lambda: (load("seq_len=1").seq_len == 1, "accepted"), "result"))
    bad("grad_accum=3 with batch_size=4", "grad_accum=3", "batch_size=4", says=("grad_accum",))
    bad("model.chunk_size=24", "model.chunk_size=24", says=("chunk_size",))
    bad("steps=[1, 2] (a list)", "steps=[1, 2]", says=("steps",))
    c.append(Case("config", "lr='0.1' (a quoted number: YAML 1.1 reads 3e-4 so)",
                  lambda: (load("lr='0.1'").lr == 0.1, "read as 0.1"), "result"))
    bad("model.vocab_size=2**40", f"model.vocab_size={2**40}", says=("vocab_size",))
    bad("model.decoder_embed_dim=2**40", f"model.decoder_embed_dim={2**40}",
        says=("decoder_embed_dim",))

    def from_yaml(name, text, says=(), expect="error", check=None):
        def call():
            cfg = load(preset=yaml_file(scratch, f"cfg-{len(c)}.yaml", text))
            return check(cfg) if check else cfg
        c.append(Case("yaml", name, call, expect=expect, says=says))

    from_yaml("a top-level list", "- 1\n- 2\n")
    from_yaml("binary garbage", b"\x00\xff\xfe\x80steps: 3\n")
    from_yaml("a python tag", "steps: !!python/object/apply:os.getcwd []\n",
              says=("python/object",))
    from_yaml("steps: '10' (quoted)", "steps: '10'\n", says=("steps",))
    from_yaml("run_dir: 123 (a number: the folder '123')", "run_dir: 123\n", expect="result",
              check=lambda cfg: (cfg.run_dir == "123", f"run_dir={cfg.run_dir!r}"))
    from_yaml("run_dir: yes (a YAML 1.1 boolean)", "run_dir: yes\n", says=("run_dir",))
    from_yaml("lr: .NaN", "lr: .NaN\n", says=("lr",))
    from_yaml("model inside model", "model:\n  model:\n    vocab_size: 3\n", says=("model",))
    from_yaml("an anchor and an alias (allowed)",
              "model: &m\n  decoder_layers: 2\nmesh:\n  data: 1\n", expect="result",
              check=lambda cfg: (cfg.model.decoder_layers == 2, "alias read"))
    from_yaml("steps: 0x10 (YAML 1.1 hex: 16)", "steps: 0x10\n", expect="result",
              check=lambda cfg: (cfg.steps == 16, f"steps={cfg.steps}"))
    from_yaml("a UTF-8 BOM", "\ufeffsteps: 7\n", expect="result",
              check=lambda cfg: (cfg.steps == 7, f"steps={cfg.steps}"))
    from_yaml("Latin-1 bytes in a value", "run_dir: caf\xe9\n".encode("latin-1"),
              says=("utf",))
    from_yaml("a document separator: two documents", "steps: 3\n---\nsteps: 5\n",
              says=("document",))
    c.append(Case("yaml", "--config a folder", lambda: load(preset=str(scratch))))
    c.append(Case("yaml", "--config a missing file",
                  lambda: load(preset=str(scratch / "missing.yaml")), says=("missing.yaml",)))
    return c
