"""Probe cases on files: data, metrics.jsonl, checkpoints on disk, the three commands."""
from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np

from tests.probes.probe_cases import Case, copy_run, train, trained


_IDS = itertools.count()


def _steps_in_metrics(run: Path) -> list[int]:
    from tnl_jax.training.metrics import read_metrics
    return [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def _generate(*argv: str):
    from tnl_jax.cli.generate import main
    main(list(argv))


def _convert(*argv: str):
    from tnl_jax.cli.convert import main
    main(list(argv))


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def data_cases(s: Path) -> list[Case]:
    c = []
    d = s / "data"
    d.mkdir()

    def data_run(name, make, says=("data",), expect="error", extra=()):
        def call(n=len(c)):
            path = make()
            run = s / f"data-run-{n}"
            train(run, f"data={path}", "steps=1", *extra)
            return (_steps_in_metrics(run) == [1], f"metrics steps {_steps_in_metrics(run)}")
        c.append(Case("data", name, call, expect=expect, says=says))

    def write(name, content: bytes):
        (d / name).write_bytes(content)
        return str(d / name)

    def npy(name, array):
        np.save(d / name, array)
        return str(d / name)

    data_run("an empty text file", lambda: write("empty.txt", b""))
    data_run("a one-byte text file (bos + 1 byte: one document)",
             lambda: write("one.txt", b"x"), expect="result")

    def held_out_name():
        """The one document of a corpus, named so that its path's hash is held out."""
        from tnl_jax.data import sources
        name = next(f"only{i}.txt" for i in range(10_000)
                    if sources.held_out(f"{d / f'only{i}.txt'}:0", 0.02))
        return write(name, b"one document of text\n" * 20)
    data_run("a one-document corpus whose path hashes into eval_fraction", held_out_name,
             expect="result")
    data_run("one 300 kB line with no newline", lambda: write("line.txt", b"ab" * 150_000),
             expect="result")
    data_run("a .npy of float64", lambda: npy("f.npy", np.arange(500.0)))
    data_run("a 2-D .npy", lambda: npy("two.npy", np.zeros((20, 30), np.int32)))
    data_run("a 0-d .npy", lambda: npy("zero.npy", np.int32(5)))
    data_run("a .npy of bool", lambda: npy("b.npy", np.ones(500, bool)))
    data_run("a .npy of int8 with negative ids", lambda: npy("neg.npy", -np.ones(500, np.int8)),
             says=("-1",))
    data_run("a .npy of uint64 ids past int32", lambda: npy(
        "u64.npy", np.full(500, 2**40, np.uint64)), says=(str(2**40),))

    def truncated_npy():
        path = npy("cut.npy", np.arange(5000, dtype=np.int32) % 200)
        raw = Path(path).read_bytes()
        Path(path).write_bytes(raw[:len(raw) // 2])
        return path
    data_run("a .npy cut in half (interrupted write)", truncated_npy, says=("cut.npy",))
    data_run("a .npy header only (0 tokens)", lambda: npy("none.npy", np.zeros(0, np.int32)))

    def bracket_name():
        """data= a file named a[1].txt, a1.txt beside it: the documents are a[1].txt's."""
        from tnl_jax.data import files
        write("a[1].txt", b"hello world " * 400)
        write("a1.txt", b"other file " * 400)
        found = files.expand(str(d / "a[1].txt"))
        return found == [str(d / "a[1].txt")], f"data files {found}"
    c.append(Case("data", "a file named a[1].txt (glob characters), a1.txt beside it",
                  bracket_name, "result"))
    data_run("a path with spaces and unicode", lambda: write("dé jà vu.txt", b"text " * 2000),
             expect="result")
    data_run("eval_data a missing file", lambda: write("ok.txt", b"text " * 2000),
             says=("eval_data",), extra=("eval_data=/nonexistent/*.txt", "eval_every=1"))
    data_run("a FIFO in the glob", lambda: (os.mkfifo(d / "fifo.txt"), str(d / "fifo.txt"))[1],
             says=("fifo.txt",))
    return c


def resume_cases(s: Path) -> list[Case]:
    c = []

    def resumed(name, damage, check=None, expect="result", says=()):
        def call(n=len(c)):
            run = copy_run(s, f"resume-{n}")
            damage(run)
            train(run, "steps=6", "checkpoint_every=2")
            steps = _steps_in_metrics(run)
            return check(run, steps) if check else (steps[-3:] == [4, 5, 6], f"steps {steps}")
        c.append(Case("resume", name, call, expect=expect, says=says))

    def tear_metrics(run):
        with open(run / "metrics.jsonl", "ab") as f:
            f.write(b'{"step": 5, "lo')
    resumed("metrics.jsonl with a torn last line", tear_metrics)

    def nul_metrics(run):
        with open(run / "metrics.jsonl", "ab") as f:
            f.write(b"\x00" * 4096 + b"\n")
    resumed("metrics.jsonl ending in NUL bytes (power loss)", nul_metrics)
    resumed("metrics.jsonl emptied", lambda run: (run / "metrics.jsonl").write_bytes(b""),
            check=lambda run, steps: (steps == [5, 6], f"steps {steps}"))

    def unmarked_newest(run):
        for name in ("commit_success.txt", "_CHECKPOINT_METADATA"):
            (run / "checkpoints/4" / name).unlink(missing_ok=True)
    resumed("newest step without its commit marks (interrupted save)", unmarked_newest,
            check=lambda run, steps: (steps[-4:] == [3, 4, 5, 6], f"steps {steps}"))

    def empty_state(run):
        shutil.rmtree(run / "checkpoints/4/state")
        (run / "checkpoints/4/state").mkdir()
    resumed("newest step's state/ emptied", empty_state,
            check=lambda run, steps: (steps[-4:] == [3, 4, 5, 6], f"steps {steps}"))
    resumed("a stray file named 7 in checkpoints/",
            lambda run: (run / "checkpoints/7").write_text("x"))
    resumed("an Orbax temporary folder in checkpoints/",
            lambda run: (run / "checkpoints/6.orbax-checkpoint-tmp-1234").mkdir())

    def truncated_config(run):
        for path in (run / "checkpoints/4/config").rglob("*"):
            if path.is_file():
                path.write_bytes(path.read_bytes()[:10])
    resumed("newest step's config/ files cut to 10 bytes", truncated_config,
            check=lambda run, steps: (steps[-4:] == [3, 4, 5, 6], f"steps {steps}"))

    def data_zeroed(run):
        for path in (run / "checkpoints/4/data").rglob("*"):
            if path.is_file():
                path.write_bytes(b"\x00" * path.stat().st_size)
    resumed("newest step's data-iterator state zero-filled", data_zeroed,
            check=lambda run, steps: (steps[-4:] == [3, 4, 5, 6], f"steps {steps}"))

    def lower_steps():
        run = copy_run(s, "resume-lower")
        train(run, "steps=2", "checkpoint_every=2")
        return (_steps_in_metrics(run) == [1, 2, 3, 4], f"steps {_steps_in_metrics(run)}")
    c.append(Case("resume", "steps=2 on a run already at step 4", lower_steps, "result"))

    def linked_checkpoints():
        run = copy_run(s, "resume-linked")
        shutil.move(run / "checkpoints", s / "elsewhere-checkpoints")
        (run / "checkpoints").symlink_to(s / "elsewhere-checkpoints")
        train(run, "steps=6", "checkpoint_every=2")
        steps = _steps_in_metrics(run)
        return (steps[-2:] == [5, 6] and (s / "elsewhere-checkpoints/6").is_dir(), f"{steps}")
    c.append(Case("resume", "checkpoints/ a symbolic link to another disk", linked_checkpoints,
                  "result"))

    def unicode_run_dir():
        run = s / "runs with space" / "ü ñ"
        train(run, "steps=1")
        return (_steps_in_metrics(run) == [1], "trained")
    c.append(Case("resume", "run_dir with spaces and unicode", unicode_run_dir, "result"))
    return c


def load_cases(s: Path) -> list[Case]:
    c = []

    def loaded(name, damage, expect="result", says=(), step=2):
        def call(n=len(c)):
            from tnl_jax.checkpoints import loader
            run = copy_run(s, f"load-{n}")
            damage(run)
            model = loader.load_model(run, attention_backend="xla")
            return (model is not None, "loaded")
        c.append(Case("loaders", name, call, expect=expect, says=says))

    def unmarked(run):
        for name in ("commit_success.txt", "_CHECKPOINT_METADATA"):
            (run / "checkpoints/4" / name).unlink(missing_ok=True)
    loaded("load_model: newest step interrupted", unmarked)

    def all_broken(run):
        for step in ("2", "4"):
            shutil.rmtree(run / "checkpoints" / step / "state")
    loaded("load_model: every step lost state/", all_broken, expect="error",
           says=("can be read",))
    loaded("load_model: checkpoints/ is empty",
           lambda run: [shutil.rmtree(p) for p in (run / "checkpoints").iterdir()],
           expect="error", says=("checkpoint",))
    c.append(Case("loaders", "load_model(dtype='int8')", lambda: __import__(
        "tnl_jax").load_model(trained(s), dtype="int8"), says=("int8",)))
    c.append(Case("loaders", "load_model(dtype=float64) without x64", lambda: __import__(
        "tnl_jax").load_model(trained(s), dtype=np.float64), says=("float64",)))
    c.append(Case("loaders", "load_model(attention_backend='bogus')", lambda: __import__(
        "tnl_jax").load_model(trained(s), attention_backend="bogus"), says=("bogus",)))
    c.append(Case("loaders", "load_model(a run's checkpoints/ folder)", lambda: __import__(
        "tnl_jax").load_model(trained(s) / "checkpoints"), says=("checkpoints",)))
    c.append(Case("loaders", "load_model(a step folder)", lambda: __import__(
        "tnl_jax").load_model(trained(s) / "checkpoints" / "4"), says=("4",)))

    def hf_dir(name, config, weights: bytes | None = None):
        def call(n=len(c)):
            from tnl_jax import load_hf
            folder = s / f"hf-{n}"
            folder.mkdir()
            (folder / "config.json").write_text(config)
            if weights is not None:
                (folder / "model.safetensors").write_bytes(weights)
            return load_hf(folder)
        c.append(Case("loaders", name, call, says=("config",) if weights is None else ()))
    hf_dir("load_hf: config.json is a list", "[1, 2]")
    hf_dir("load_hf: config.json is '{}'", "{}")
    hf_dir("load_hf: config.json with vocab_size '61' (a string)",
           json.dumps({"model_type": "transnormer", "vocab_size": "61"}))
    hf_dir("load_hf: config.json is empty", "")
    return c


def cli_cases(s: Path) -> list[Case]:
    c = []

    def gen(name, *argv, expect="error", says=(), check=None):
        def call():
            prompt = () if "--prompt" in argv else ("--prompt", "ab")
            result = _generate("--checkpoint", str(trained(s)), "--max-new-tokens", "3",
                               *prompt, *argv)
            return check() if check else result
        c.append(Case("generate", name, call, expect=expect, says=says))

    gen("--max-new-tokens -1", "--max-new-tokens", "-1", says=("max_new_tokens",))
    gen("--max-new-tokens 2**31", "--max-new-tokens", str(2**31), says=("max_new_tokens",))
    gen("--temperature nan", "--temperature", "nan", says=("temperature",))
    gen("--temperature inf", "--temperature", "inf", says=("temperature",))
    gen("--top-p 0", "--top-p", "0", says=("top_p",))
    gen("--top-p 1.5", "--top-p", "1.5", says=("top_p",))
    gen("--top-k 0", "--top-k", "0", says=("top_k",))
    gen("--seed 2**70", "--seed", str(2**70), says=("seed",))
    gen("--dtype int8", "--dtype", "int8", says=("int8",))
    gen("--dtype float64", "--dtype", "float64", says=("float64",))
    gen("--prompt '' (the bytes tokenizer adds bos)", "--prompt", "", expect="result",
        check=lambda: (True, "generated after bos"))
    gen("--tokenizer a missing file", "--prompt", "a", "--tokenizer", str(s / "no.model"),
        says=("no.model",))

    def garbage_model():
        (s / "garbage.model").write_bytes(b"\x00garbage")
        return _generate("--checkpoint", str(trained(s)), "--prompt", "a", "--tokenizer",
                         str(s / "garbage.model"))
    c.append(Case("generate", "--tokenizer a garbage .model", garbage_model,
                  says=("garbage.model",)))
    c.append(Case("generate", "--checkpoint a missing folder", lambda: _generate(
        "--checkpoint", str(s / "nowhere"), "--prompt", "a"), says=("nowhere",)))
    c.append(Case("generate", "--checkpoint an empty folder", lambda: _generate(
        "--checkpoint", str((s / "emptydir").resolve()), "--prompt", "a")
        if (s / "emptydir").mkdir() is None else None, says=("emptydir",)))
    c.append(Case("generate", "--checkpoint a file", lambda: _generate(
        "--checkpoint", str(trained(s) / "metrics.jsonl"), "--prompt", "a"),
        says=("metrics.jsonl",)))
    gen("--prompt with emoji and NUL (bytes)", "--prompt", "hé 🙂\x00", "--temperature", "0",
        expect="result", check=lambda: (True, "printed"))
    return c


def convert_cases(s: Path) -> list[Case]:
    c = []

    def converted(name, make_out, *extra, keep=None, expect="error", says=()):
        """tnl-convert --from <run> --out <make_out()>; ``keep``: a folder that must be
        left exactly as it was (else data loss)."""
        def call():
            source, out = make_out()
            before = _tree(keep(source, out)) if keep else None
            error = None
            try:
                _convert("--from", str(source), "--out", str(out), *extra)
            except SystemExit as stop:
                error = stop
            if keep and _tree(keep(source, out)) != before:
                return "data loss", f"{keep(source, out)} changed (exit {error and error.code})"
            if error is not None:
                raise error
            return (Path(out).is_dir(), f"wrote {out}")
        c.append(Case("convert", name, call, expect=expect, says=says))

    def run_and(out_name):
        def make():
            source = copy_run(s, f"conv-src-{next(_IDS)}")
            return source, out_name(source)
        return make
    converted("--out the source run itself", run_and(lambda src: src),
              keep=lambda src, out: src, says=("--out",))
    converted("--out inside the source run", run_and(lambda src: src / "hf"),
              keep=lambda src, out: src / "checkpoints", says=("--out",))
    converted("--out the source run, --overwrite", run_and(lambda src: src), "--overwrite",
              keep=lambda src, out: src / "checkpoints", says=("--out",))

    def converted_twice(src):
        out = s / f"conv-{next(_IDS)}"
        _convert("--from", str(src), "--to", "converted", "--out", str(out))
        return out

    def to_itself():
        out = converted_twice(copy_run(s, f"conv-src-{next(_IDS)}"))
        return out, out
    converted("a converted dir onto itself, --overwrite", to_itself, "--to", "converted",
              "--overwrite", keep=lambda src, out: src, says=("--out",))

    def user_folder():
        src = copy_run(s, f"conv-src-{next(_IDS)}")
        out = s / f"user-{next(_IDS)}"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        return src, out
    converted("--out a folder of user files, --overwrite", user_folder, "--overwrite",
              keep=lambda src, out: out, says=("--overwrite",))

    def user_file():
        src = copy_run(s, f"conv-src-{next(_IDS)}")
        (s / "a-file").write_text("mine")
        return src, s / "a-file"
    converted("--out an existing file", user_file, keep=lambda src, out: s,
              says=("a-file",))
    converted("--out with spaces and unicode",
              run_and(lambda src: s / "out dir ü" / "x y"), expect="result")

    def via_link():
        n = next(_IDS)
        src = copy_run(s, f"conv-src-{n}")
        (s / f"link-{n}").symlink_to(src)
        return s / f"link-{n}", s / f"conv-link-{n}"
    converted("--from a symbolic link to a run", via_link, expect="result")

    def newest_broken():
        src = copy_run(s, f"conv-src-{next(_IDS)}")
        shutil.rmtree(src / "checkpoints/4/state")
        return src, s / f"conv-fallback-{next(_IDS)}"
    converted("--from a run whose newest step lost state/", newest_broken, expect="result")

    def through_a_file():
        src = copy_run(s, f"conv-src-{next(_IDS)}")
        (s / "plain-file").write_text("mine")
        return src, s / "plain-file" / "out"
    converted("--out through a file", through_a_file, keep=lambda src, out: s / "plain-file",
              says=("--out", "plain-file", "not a directory"))

    def round_trip():
        """run -> hf -> converted: the same logits as the run's model."""
        from tnl_jax.checkpoints import loader
        n = next(_IDS)
        hf, conv = s / f"rt-hf-{n}", s / f"rt-conv-{n}"
        _convert("--from", str(trained(s)), "--out", str(hf))
        _convert("--hf", str(hf), "--out", str(conv))
        ids = np.random.default_rng(n).integers(0, 256, (1, 12)).astype(np.int32)
        want, got = (np.asarray(loader.load_model(p, dtype="float32", attention_backend="xla")(
            ids)) for p in (trained(s), conv))
        return bool(np.allclose(got, want, atol=1e-5)), f"max diff {np.abs(got - want).max():.2g}"
    c.append(Case("convert", "run -> hf -> converted keeps the logits", round_trip, "result"))
    return c


def cases(s: Path) -> list[Case]:
    return [*data_cases(s), *resume_cases(s), *load_cases(s), *cli_cases(s), *convert_cases(s)]
