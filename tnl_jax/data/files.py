"""The files of a data source: a glob expanded once per file, their kind by suffix, and
a fingerprint of them that a resumed run compares with its checkpoint's.

A ``**`` glob that passes a symbolic link twice (a link loop, or two links to one
folder) would match a file many times: each file is kept once, under the first of
its names (``os.path.realpath`` tells them apart). Suffixes are read without case
(``tokens.NPY`` is a token stream); ``.npz`` archives are refused by name.

The fingerprint holds each file's name (relative to the glob's fixed folder), size
and a CRC-32 of its first and last ``HASHED_BYTES`` bytes: cheap for any corpus, and
a file rewritten, cut, grown, deleted or added between runs is seen (a change only
in the middle of a large file, keeping its size, is not).
"""
from __future__ import annotations

import glob
import os
import zlib
from pathlib import Path

HASHED_BYTES = 1 << 12  # Hashed at each end of a file.
TOKEN_SHARDS = {".npy": "npy", ".array_record": "array_record"}
REFUSED = {".npz": "a .npz archive is not read: save each token stream with np.save as .npy"}


def expand(pattern: str, key: str = "data") -> list[str]:
    """The files ``pattern`` matches (directories left out, each file once), sorted;
    none is a ``FileNotFoundError`` naming ``key`` and the pattern. A pattern that is
    the name of an existing file is that file (``a[1].txt`` is not ``a1.txt``)."""
    expanded = os.path.expanduser(pattern)
    if glob.escape(expanded) != expanded and os.path.isfile(expanded):
        return [expanded]  # A file's own name, holding [, ] * or ?: that file, not a glob.
    matches = sorted(glob.glob(expanded, recursive=True))
    if not matches:
        raise FileNotFoundError(f"{key}={pattern!r}: no file matches")
    files, seen = [], set()
    for path in matches:
        real = os.path.realpath(path)
        if os.path.isfile(path) and real not in seen:
            seen.add(real)
            files.append(path)
    if not files:
        raise FileNotFoundError(f"{key}={pattern!r} matches only directories ({matches[0]!r}"
                                f"{', ...' if len(matches) > 1 else ''}); give a glob of files, "
                                f"e.g. '{pattern.rstrip('/')}/**/*.txt'")
    return files


def kind_of(paths: list[str], pattern: str, key: str = "data") -> str:
    """``'npy'``, ``'array_record'`` or ``'text'``: what the files are, by their suffix
    (any case); a ``ValueError`` naming ``key`` for a refused suffix or a mix of token
    shards with other files."""
    suffixes = {Path(p).suffix.lower() for p in paths}
    for suffix, why in REFUSED.items():
        if suffix in suffixes:
            example = next(p for p in paths if Path(p).suffix.lower() == suffix)
            raise ValueError(f"{key}={pattern!r} matches {example!r}: {why}")
    kinds = {TOKEN_SHARDS.get(s, "text") for s in suffixes}
    if len(kinds) > 1 and kinds & set(TOKEN_SHARDS.values()):
        raise ValueError(f"{key}={pattern!r} mixes token shards with other files: "
                         f"{sorted(suffixes)}")
    return kinds.pop()


def glob_root(pattern: str) -> str:
    """The folder of ``pattern`` before its first wildcard (names are kept relative to
    it, so that the same files reached from another working folder match)."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def file_digest(path: str) -> str:
    """``'<size>:<crc32 of the first and last HASHED_BYTES>'`` of one file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        crc = zlib.crc32(f.read(HASHED_BYTES))
        if size > HASHED_BYTES:
            f.seek(max(HASHED_BYTES, size - HASHED_BYTES))
            crc = zlib.crc32(f.read(), crc)
    return f"{size}:{crc:08x}"


def source_files(source: str, key: str = "data") -> tuple[str, list[str]]:
    """The folder names are relative to and the files of ``source`` (``[]`` for
    ``mqar``, which has none)."""
    if source == "mqar":
        return ".", []
    if source == "stdlib":
        from tnl_jax.data.sources import stdlib_files, stdlib_root  # It imports this module.
        return str(stdlib_root()), [str(p) for p in stdlib_files()]
    return glob_root(source), expand(source, key)


def fingerprint(source: str, key: str = "data") -> dict[str, str]:
    """``{name: file_digest}`` of every file of ``source``, names relative to its folder."""
    root, paths = source_files(source, key)
    return {os.path.relpath(p, root): file_digest(p) for p in paths}


def describe_changes(saved: dict[str, str], current: dict[str, str], limit: int = 3) -> str:
    """What differs between two fingerprints, a few names of each kind of change
    (``''``: nothing)."""
    def names(items: list[str]) -> str:
        shown = ", ".join(items[:limit])
        return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

    removed = sorted(set(saved) - set(current))
    added = sorted(set(current) - set(saved))
    changed = sorted(n for n in set(saved) & set(current) if saved[n] != current[n])
    parts = []
    if removed:
        parts.append(f"{len(removed)} file(s) gone ({names(removed)})")
    if added:
        parts.append(f"{len(added)} new file(s) ({names(added)})")
    if changed:
        sizes = [f"{n}: {saved[n].split(':')[0]} -> {current[n].split(':')[0]} bytes"
                 for n in changed]
        parts.append(f"{len(changed)} file(s) rewritten ({names(sizes)})")
    return "; ".join(parts)


def shared_files(first: str, second: str) -> list[str]:
    """The files of source ``first`` that source ``second`` reads too (the same real
    path), sorted."""
    _, ours = source_files(first)
    _, theirs = source_files(second, "eval_data")
    real = {os.path.realpath(p): p for p in ours}
    return sorted(real[r] for r in map(os.path.realpath, theirs) if r in real)
