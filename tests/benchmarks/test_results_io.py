"""Saved results read the same plain and gzipped (benchmarks/common/results_io.py), and
every raw result kept in the repository reads back."""
import gzip
import json
from pathlib import Path

import numpy as np

from benchmarks.common.results_io import read_json, read_text

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def random_rows(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"impl": f"impl{i}", "T": int(rng.integers(1, 1 << 17)), "fwd_ms": float(rng.random())}
            for i in range(int(rng.integers(3, 9)))]


def test_gzipped_json_reads_as_the_plain_file(tmp_path):
    document = {"copy_TBps": float(np.random.default_rng(1).random()), "rows": random_rows(2)}
    plain = tmp_path / "kernel_bench.json"
    plain.write_text(json.dumps(document, indent=1))
    packed = tmp_path / "kernel_bench.json.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_json(packed) == read_json(plain) == document


def test_gzipped_json_lines_read_line_by_line(tmp_path):
    rows = random_rows(3)
    packed = tmp_path / "rows.jsonl.gz"
    with gzip.open(packed, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    assert [json.loads(line) for line in read_text(packed).splitlines()] == rows


def test_kept_raw_results_read_back():
    """Every gzipped result under benchmarks/results is whole JSON (or JSON lines)."""
    kept = sorted(RESULTS.rglob("*.gz"))
    assert kept, f"no gzipped results under {RESULTS}"
    for path in kept:
        text = read_text(path)
        if path.name.endswith(".jsonl.gz"):
            assert all(isinstance(json.loads(line), dict) for line in text.splitlines() if line), path
        else:
            assert json.loads(text), f"{path} holds an empty document"
