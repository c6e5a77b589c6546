"""JSON files of checkpoint directories (``config.json``, ``model_config.json``, a
sharded checkpoint's ``*.index.json``): every problem names the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of the JSON file ``path``; a missing file is a
    ``FileNotFoundError``, anything else that is not a JSON object a ``ValueError``,
    each naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: the top level must be a JSON object of keys, got a "
                         f"{type(document).__name__}: {str(document)[:60]!r}")
    return document
