"""Document sources: each gives a `grain.MapDataset` of `{'tokens': int32[n]}`.

The train/eval split is a fixed hash of a document's key (a file's path, or a
file and an index), so adding files never moves a document between splits (except in a
corpus so small that the hash holds out none of its documents: then the one of smallest
hash is held out); split "all" takes every document (an `eval_data` corpus is held out
whole). Text files are read as bytes: the bytes tokenizer takes them as they are, a
text tokenizer needs UTF-8 (``encode_bytes``). A document
of fewer than `MIN_TOKENS` tokens has no target to learn and is skipped (filtered
to `None`, which Grain passes over). Token ids are checked below the vocabulary.
"""
from __future__ import annotations

import functools
import os
import sysconfig
import zlib
from pathlib import Path
from typing import Any

import grain
import numpy as np

from tnl_jax.data import files, mqar

expand = files.expand  # Its name here too: tnl_jax.evaluation reads sources.expand.

TEXT_SECTION_BYTES = 1 << 20  # Large text files are cut at newlines into documents this big.
STREAM_CHUNK_TOKENS = 1 << 24  # A .npy stream is scanned (EOS, ids) this many tokens at a time.
MIN_TOKENS = 2  # A document needs an input and a target; shorter ones are skipped.
SPLITS = ("train", "eval", "all")


def has_targets(document: dict[str, np.ndarray]) -> bool:
    """Whether a document holds at least one target (an empty file tokenises to at most a BOS)."""
    return len(document["tokens"]) >= MIN_TOKENS


def _hash(key: str) -> int:
    return zlib.crc32(key.encode()) % 10_000


def held_out(key: str, eval_fraction: float) -> bool:
    """Whether the document named `key` belongs to the evaluation split (by its hash)."""
    return _hash(key) < eval_fraction * 10_000


def _keep(keys: list[str], split: str, eval_fraction: float,
          eligible: list[bool] | None = None, hold_out_one: bool = True) -> list[int]:
    """Indices of the documents of `split`; only an `eligible` document can be held out.

    When the hash holds out none of two or more eligible documents (a small corpus),
    `eval_fraction` > 0 and `hold_out_one` (evaluation is on), the eligible document of
    the smallest hash is held out: a held-out set of one document rather than none.
    Every document held out would leave none to train on: below ``eval_fraction=1``
    (all held out, as the evaluation asks) the one of the largest hash trains then."""
    if split == "all":
        return list(range(len(keys)))
    eligible = eligible or [True] * len(keys)
    chosen = [ok and held_out(key, eval_fraction) for key, ok in zip(keys, eligible)]
    candidates = [i for i, ok in enumerate(eligible) if ok]
    if hold_out_one and eval_fraction > 0 and not any(chosen) and len(candidates) >= 2:
        chosen[min(candidates, key=lambda i: (_hash(keys[i]), keys[i]))] = True
    if eval_fraction < 1 and chosen and all(chosen):  # Else nothing trains (one document
        # whose hash, which hangs on its path, fell in eval_fraction): the largest trains.
        chosen[max(range(len(keys)), key=lambda i: (_hash(keys[i]), keys[i]))] = False
    want_eval = split == "eval"
    return [i for i, held in enumerate(chosen) if held == want_eval]


def stdlib_root() -> Path:
    """Where this Python's standard library lies (the ``stdlib`` source's root)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The standard library's .py files (no site-packages), in a fixed order (found once
    per process: walking the folder takes a second or more)."""
    return list(_stdlib_files())


@functools.cache
def _stdlib_files() -> tuple[Path, ...]:
    found = (p for p in stdlib_root().rglob("*.py")
             if not {"site-packages", "dist-packages"} & set(p.parts))
    return tuple(sorted(found))


def encode_bytes(tokenizer: Any, raw: bytes, where: str = "a document",
                 offset: int = 0) -> np.ndarray:
    """Token ids of raw file bytes, with the tokenizer's BOS in front when it has one.

    A tokenizer with ``encode_bytes`` (the bytes tokenizer) reads the bytes as they are,
    any encoding; a text tokenizer (SentencePiece, ``tokenizers``) reads UTF-8 text, and
    other bytes are a ``ValueError`` naming ``where`` and the first bad byte's offset
    (``raw`` starts at byte ``offset`` of ``where``): never text made of U+FFFD."""
    if hasattr(tokenizer, "encode_bytes"):
        ids = tokenizer.encode_bytes(raw)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = raw[error.start:error.start + 4]
            raise ValueError(
                f"{where}: not UTF-8 text (byte {offset + error.start}: {bad!r}); "
                f"a SentencePiece or tokenizers tokenizer reads UTF-8 text: convert the file "
                f"to UTF-8, or train with tokenizer=bytes, which reads any bytes") from None
        ids = tokenizer.encode(text)
    if getattr(tokenizer, "bos_id", None) is not None:
        ids = [tokenizer.bos_id, *ids]
    return np.asarray(ids, np.int32)


def _text_sections(path: Path) -> list[tuple[str, int]]:
    size = path.stat().st_size
    return [(str(path), start) for start in range(0, max(size, 1), TEXT_SECTION_BYTES)]


def _section(path: str, start: int) -> tuple[int, bytes]:
    """The offset and bytes of the whole lines whose first byte lies in
    [start, start + TEXT_SECTION_BYTES)."""
    end = start + TEXT_SECTION_BYTES
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            f.readline()  # The line holding byte start - 1 belongs to the section before.
        offset = f.tell()
        if offset >= end:
            return offset, b""
        return offset, f.read(end - 1 - offset) + f.readline()


def _read_section(path: str, start: int) -> bytes:
    """The whole lines whose first byte lies in [start, start + TEXT_SECTION_BYTES)."""
    return _section(path, start)[1]


def kept_sections(paths: list[Path], split: str, eval_fraction: float,
                  root: Path | None = None, eval_min_bytes: int = 0, hold_out_one: bool = True
                  ) -> list[tuple[str, tuple[Path, int]]]:
    """``(key, (path, start))`` of the text sections of ``split``: the key (the path
    relative to ``root``, then the section's start) is what the split hashes, and names
    a held-out document in per-document results."""
    sections = [s for p in paths for s in _text_sections(p)]
    keys = [f"{os.path.relpath(p, root) if root else p}:{start}" for p, start in sections]
    eligible = [os.path.getsize(p) >= eval_min_bytes for p, _ in sections]
    return [(keys[i], sections[i])
            for i in _keep(keys, split, eval_fraction, eligible, hold_out_one)]


def read_section(section: tuple[Path, int], tokenizer: Any) -> np.ndarray:
    """The token ids of one text section (an error names its file and byte offset)."""
    offset, raw = _section(*section)
    return encode_bytes(tokenizer, raw, str(section[0]), offset)


def text_documents(paths: list[Path], split: str, tokenizer: Any, eval_fraction: float,
                   root: Path | None = None, eval_min_bytes: int = 0,
                   hold_out_one: bool = True) -> grain.MapDataset:
    """Text files (sections of at most ~1 MiB), tokenised when read. Only files of at
    least `eval_min_bytes` bytes can be held out: a held-out set of long documents."""
    kept = [section for _, section in kept_sections(paths, split, eval_fraction, root,
                                                    eval_min_bytes, hold_out_one)]
    return grain.MapDataset.source(kept).map(
        lambda s: {"tokens": read_section(s, tokenizer)}).filter(has_targets)


def check_ids(tokens: np.ndarray, vocab_size: int, where: str, offset: int = 0) -> None:
    """A ``ValueError`` naming ``where``, the first id outside ``[0, vocab_size)`` and its
    position (an id past the embedding table would make the loss NaN, not an error)."""
    bad = np.flatnonzero((tokens < 0) | (tokens >= vocab_size))
    if len(bad):
        position = int(bad[0])
        raise ValueError(f"{where}: token id {int(tokens[position])} at position "
                         f"{offset + position} is outside the vocabulary: ids must lie in "
                         f"[0, {vocab_size}) (vocab_size={vocab_size})")


def open_stream(path: str) -> np.ndarray:
    """A .npy token stream, memory-mapped: 1-D, of an integer dtype (a float stream
    would be cast to ids silently)."""
    try:
        stream = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy token stream ({error})") from None
    if stream.ndim != 1:
        raise ValueError(f"{path}: expected a 1-D token stream, got shape {stream.shape}")
    if not np.issubdtype(stream.dtype, np.integer):
        raise ValueError(f"{path}: token ids must be integers, got dtype {stream.dtype} "
                         f"(save the stream with an integer dtype, e.g. int32)")
    return stream


def stream_spans(path: str, eos_id: int | None, vocab_size: int) -> list[tuple[str, int, int]]:
    """``(path, start, end)`` of each document of a stream (cut after every EOS; shorter
    than ``MIN_TOKENS``: skipped), every id checked, reading ``STREAM_CHUNK_TOKENS`` at a time."""
    stream = open_stream(path)
    cuts = []
    for start in range(0, len(stream), STREAM_CHUNK_TOKENS):
        piece = np.asarray(stream[start:start + STREAM_CHUNK_TOKENS])
        check_ids(piece, vocab_size, path, start)
        cuts.append(np.flatnonzero(piece == eos_id) + start + 1)
    ends = np.concatenate([*cuts, [len(stream)]]).astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    return [(path, int(a), int(b)) for a, b in zip(starts, ends) if b - a >= MIN_TOKENS]


def npy_documents(paths: list[str], split: str, eos_id: int | None, eval_fraction: float,
                  vocab_size: int, hold_out_one: bool = True) -> grain.MapDataset:
    """Token streams in .npy files (1-D integers, memory-mapped), cut after every EOS.

    Finding the documents reads each stream once at start-up (checking every id); the
    tokens themselves are read only when a document is used.
    """
    spans = [span for path in paths for span in stream_spans(path, eos_id, vocab_size)]
    keys = [f"{os.path.basename(p)}:{a}" for p, a, _ in spans]
    kept = [spans[i] for i in _keep(keys, split, eval_fraction, hold_out_one=hold_out_one)]

    def read(span: tuple[str, int, int]) -> dict[str, np.ndarray]:
        path, start, end = span
        return {"tokens": np.asarray(np.load(path, mmap_mode="r")[start:end], np.int32)}

    return grain.MapDataset.source(kept).map(read)


def array_record_documents(paths: list[str], split: str, eval_fraction: float,
                           vocab_size: int, hold_out_one: bool = True) -> grain.MapDataset:
    """ArrayRecord files, one document per record stored as raw int32 tokens; the ids of
    a record are checked when it is read."""
    records = grain.sources.ArrayRecordDataSource(paths)
    keys = [f"record:{i}" for i in range(len(records))]
    kept = _keep(keys, split, eval_fraction, hold_out_one=hold_out_one)
    named = paths[0] + (f" (and {len(paths) - 1} more files)" if len(paths) > 1 else "")

    def read(index: int) -> dict[str, np.ndarray]:
        raw, where = records[index], f"{named} record {index}"
        if len(raw) % 4:
            raise ValueError(f"{where}: {len(raw)} bytes, not a whole number of int32 tokens")
        tokens = np.frombuffer(raw, dtype=np.int32).copy()
        check_ids(tokens, vocab_size, where)
        return {"tokens": tokens}

    return grain.MapDataset.source(kept).map(read).filter(has_targets)




def open_documents(source: str, split: str, tokenizer: Any, eval_fraction: float,
                   seq_len: int, vocab_size: int | None = None,
                   key: str = "data", eval_min_bytes: int = 0,
                   hold_out_one: bool = True) -> grain.MapDataset:
    """The documents of `source` in `split` ('train', 'eval' or 'all'); token ids must lie
    below `vocab_size` (default: the tokenizer's). `key` names the source in errors.
    `eval_min_bytes`: only text files at least this big can be held out."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}, expected one of {SPLITS}")
    vocab_size = tokenizer.vocab_size if vocab_size is None else vocab_size
    if source == "stdlib":
        return text_documents(stdlib_files(), split, tokenizer, eval_fraction, stdlib_root(),
                              eval_min_bytes, hold_out_one)
    if source == "mqar":
        mqar.check(seq_len, vocab_size, key)
        return mqar.documents("train" if split == "train" else "eval", seq_len, vocab_size)
    paths = files.expand(source, key)
    kind = files.kind_of(paths, source, key)
    if kind == "npy":
        return npy_documents(paths, split, tokenizer.eos_id, eval_fraction, vocab_size,
                             hold_out_one)
    if kind == "array_record":
        return array_record_documents(paths, split, eval_fraction, vocab_size, hold_out_one)
    return text_documents([Path(p) for p in paths], split, tokenizer, eval_fraction,
                          eval_min_bytes=eval_min_bytes, hold_out_one=hold_out_one)
