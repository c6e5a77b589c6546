"""Reading saved results. The repository keeps raw results (JSON, JSON lines) gzipped
(``name.json.gz``) beside their tables and plots; the readers here take either form."""
from __future__ import annotations

import gzip
import json
import os
from typing import Any


def read_text(path: str | os.PathLike) -> str:
    """The text of a results file, through gzip when its name ends in ``.gz``."""
    if os.fspath(path).endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_json(path: str | os.PathLike) -> Any:
    """A saved JSON document (``.json`` or ``.json.gz``)."""
    return json.loads(read_text(path))
