"""Paths a user gives for a folder to create (``run_dir``, ``tnl-convert --out``): the
part of the path that exists already, which tells a path passing through a file."""
from __future__ import annotations

from pathlib import Path


def first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a dangling link counts as existing)."""
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        path = path.parent
    return path
