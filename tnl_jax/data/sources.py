"""Document sources: each gives a `grain.MapDataset` of `{'tokens': int32[n]}`.

The train/eval split is a fixed hash of a document's key (a file's path, or a
file and an index), so adding files never moves a document between splits.
"""
from __future__ import annotations

import glob
import os
import sysconfig
import zlib
from pathlib import Path
from typing import Any

import grain
import numpy as np

from tnl_jax.data import mqar

TEXT_SECTION_BYTES = 1 << 20  # Large text files are cut at newlines into documents this big.


def held_out(key: str, eval_fraction: float) -> bool:
    """Whether the document named `key` belongs to the evaluation split."""
    return zlib.crc32(key.encode()) % 10_000 < eval_fraction * 10_000


def _keep(keys: list[str], split: str, eval_fraction: float) -> list[int]:
    want_eval = split == "eval"
    return [i for i, key in enumerate(keys) if held_out(key, eval_fraction) == want_eval]


def stdlib_files() -> list[Path]:
    """The standard library's .py files (no site-packages), in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = (p for p in root.rglob("*.py") if not {"site-packages", "dist-packages"} & set(p.parts))
    return sorted(files)


def encode_bytes(tokenizer: Any, raw: bytes) -> np.ndarray:
    """Token ids of raw file bytes, with the tokenizer's BOS in front when it has one."""
    ids = tokenizer.encode(raw.decode("utf-8", errors="replace"))
    if getattr(tokenizer, "bos_id", None) is not None:
        ids = [tokenizer.bos_id, *ids]
    return np.asarray(ids, np.int32)


def _text_sections(path: Path) -> list[tuple[str, int]]:
    size = path.stat().st_size
    return [(str(path), start) for start in range(0, max(size, 1), TEXT_SECTION_BYTES)]


def _read_section(path: str, start: int) -> bytes:
    """The whole lines whose first byte lies in [start, start + TEXT_SECTION_BYTES)."""
    end = start + TEXT_SECTION_BYTES
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            f.readline()  # The line holding byte start - 1 belongs to the section before.
        if f.tell() >= end:
            return b""
        return f.read(end - 1 - f.tell()) + f.readline()


def text_documents(paths: list[Path], split: str, tokenizer: Any,
                   eval_fraction: float, root: Path | None = None) -> grain.MapDataset:
    """Text files (sections of at most ~1 MiB), tokenised when read."""
    sections = [s for p in paths for s in _text_sections(p)]
    keys = [f"{os.path.relpath(p, root) if root else p}:{start}" for p, start in sections]
    kept = [sections[i] for i in _keep(keys, split, eval_fraction)]
    return grain.MapDataset.source(kept).map(
        lambda s: {"tokens": encode_bytes(tokenizer, _read_section(*s))})


def npy_documents(paths: list[str], split: str, eos_id: int,
                  eval_fraction: float) -> grain.MapDataset:
    """Token streams in .npy files (1-D integers, memory-mapped), cut after every EOS.

    Finding the documents reads each stream once at start-up; the tokens themselves
    are read only when a document is used.
    """
    spans = []
    for path in paths:
        stream = np.load(path, mmap_mode="r")
        if stream.ndim != 1:
            raise ValueError(f"{path}: expected a 1-D token stream, got shape {stream.shape}")
        ends = np.flatnonzero(np.asarray(stream) == eos_id) + 1
        starts = np.concatenate([[0], ends])
        ends = np.concatenate([ends, [len(stream)]])
        spans += [(path, int(a), int(b)) for a, b in zip(starts, ends) if b > a]
    keys = [f"{os.path.basename(p)}:{a}" for p, a, _ in spans]
    kept = [spans[i] for i in _keep(keys, split, eval_fraction)]

    def read(span: tuple[str, int, int]) -> dict[str, np.ndarray]:
        path, start, end = span
        return {"tokens": np.asarray(np.load(path, mmap_mode="r")[start:end], np.int32)}

    return grain.MapDataset.source(kept).map(read)


def array_record_documents(paths: list[str], split: str,
                           eval_fraction: float) -> grain.MapDataset:
    """ArrayRecord files, one document per record stored as raw int32 tokens."""
    records = grain.sources.ArrayRecordDataSource(paths)
    keys = [f"record:{i}" for i in range(len(records))]
    kept = _keep(keys, split, eval_fraction)
    return grain.MapDataset.source(kept).map(
        lambda i: {"tokens": np.frombuffer(records[i], dtype=np.int32).copy()})


def _expand(pattern: str) -> list[str]:
    paths = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not paths:
        raise ValueError(f"data={pattern!r}: no file matches")
    return paths


def open_documents(source: str, split: str, tokenizer: Any, eval_fraction: float,
                   seq_len: int) -> grain.MapDataset:
    """The documents of `source` in `split` ('train' or 'eval')."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}, expected 'train' or 'eval'")
    if source == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        return text_documents(stdlib_files(), split, tokenizer, eval_fraction, root)
    if source == "mqar":
        return mqar.documents(split, seq_len)
    paths = _expand(source)
    suffixes = {Path(p).suffix for p in paths}
    if suffixes == {".npy"}:
        return npy_documents(paths, split, tokenizer.eos_id, eval_fraction)
    if suffixes == {".array_record"}:
        return array_record_documents(paths, split, eval_fraction)
    if suffixes & {".npy", ".array_record"}:
        raise ValueError(f"data={source!r} mixes token shards with other files: {sorted(suffixes)}")
    return text_documents([Path(p) for p in paths], split, tokenizer, eval_fraction)
