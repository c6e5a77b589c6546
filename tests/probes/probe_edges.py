"""A hand-run probe of the edges (not a test: pytest does not collect it):

    JAX_PLATFORMS=cpu python tests/probes/probe_edges.py [--only WORD] [--show CATEGORY]

Each case is a call an attacker or a careless user would make (dtypes, scalar types,
extremes, partial files, files changed between runs, interrupted writes) over the CLI
(tnl-train, tnl-generate, tnl-convert), config files, data, the model call, generate(),
the op and the checkpoint loaders. Each is classified as

- OK: a clear error raised by this project's own code (a CLI: exit status 2 and one
  line), or the right result;
- silent-wrong: no error, and a wrong (or unchecked) result;
- crash: a raw error from inside a library (jax, numpy, orbax, yaml, ...) or a
  traceback out of a command line;
- unclear: an error from our code where a result was expected, or a message that
  does not name what it should;
- data loss: a file the user had is gone or changed.

The table of counts is printed at the end (tests/probes/README.md keeps it)."""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.probes import probe_cases  # noqa: E402

CATEGORIES = ("OK", "silent-wrong", "crash", "unclear", "data loss")
OURS = ("tnl_jax", "pallas_kernels", "argparse.py")


def raised_by_us(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is in this project."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in OURS)


def classify(case: probe_cases.Case) -> tuple[str, str]:
    """``(category, detail)`` of one case."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = case.call()
    except SystemExit as stop:
        lines = [l for l in err.getvalue().splitlines() if l.strip()]
        message = lines[-1] if lines else str(stop.code)
        if stop.code not in (0, None) and len(lines) <= 1 and case.expect == "error":
            return _named(case, message)
        return ("unclear" if case.expect == "error" else "unclear",
                f"exit {stop.code}: {message[:150]}")
    except BaseException as error:  # noqa: BLE001 (the probe classifies anything)
        text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if isinstance(error, KeyboardInterrupt):
            raise
        if not raised_by_us(error):
            where = traceback.extract_tb(error.__traceback__)[-1].filename
            return "crash", f"{text[:150]} (in {where.split('site-packages/')[-1]})"
        if case.expect == "error":
            return _named(case, text)
        return "unclear", text[:200]
    if case.expect == "error":
        return "silent-wrong", f"no error; got {str(result)[:150]}"
    verdict = result if isinstance(result, tuple) else (result, "")
    ok, detail = verdict
    if ok is True:
        return "OK", detail or "right result"
    return (ok if isinstance(ok, str) else "silent-wrong"), detail


def _named(case: probe_cases.Case, message: str) -> tuple[str, str]:
    missing = [w for w in case.says if w not in message]
    return ("unclear" if missing else "OK"), (f"missing {missing}: " if missing else "") + message[:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="cases whose name holds this")
    parser.add_argument("--show", default="", help="print only cases of this category")
    args = parser.parse_args()
    counts = {c: 0 for c in CATEGORIES}
    by_surface: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="tnl-probe-") as scratch:
        cases = probe_cases.all_cases(Path(scratch))
        for case in cases:
            if args.only not in case.name:
                continue
            category, detail = classify(case)
            counts[category] += 1
            by_surface.setdefault(case.surface, {c: 0 for c in CATEGORIES})[category] += 1
            if not args.show or args.show == category:
                print(f"{category:12} | {case.surface:10} | {case.name} | {detail}", flush=True)
    print("\n| surface | " + " | ".join(CATEGORIES) + " |")
    print("|---|" + "---|" * len(CATEGORIES))
    for surface, row in by_surface.items():
        print(f"| {surface} | " + " | ".join(str(row[c]) for c in CATEGORIES) + " |")
    print("| **all** | " + " | ".join(str(counts[c]) for c in CATEGORIES) + " |")


if __name__ == "__main__":
    main()
