"""The preset run configurations shipped with the package (``tnl-tiny`` ... ``tnl-15b``).

Each YAML file holds the training keys and a ``model:`` mapping of ``ModelConfig``
fields. ``resolve`` turns a preset name (``tnl-1b``) or a file path into a path.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT = "tnl-tiny"


def directory() -> Path:
    """The folder holding the preset files (inside the installed package)."""
    return Path(str(resources.files(__name__)))


def names() -> list[str]:
    """Every preset's name, sorted."""
    return sorted(path.stem for path in directory().glob("*.yaml"))


def resolve(name_or_path: str | Path | None = None) -> Path:
    """The file of preset ``name_or_path`` (a name like ``tnl-1b``, or a path to a
    YAML file); ``None`` means the default, ``tnl-tiny``."""
    if name_or_path is None:
        name_or_path = DEFAULT
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        return path
    preset = directory() / f"{name_or_path}.yaml"
    if not preset.exists():
        raise FileNotFoundError(f"config {str(name_or_path)!r}: neither a file nor a preset "
                                f"(presets: {', '.join(names())})")
    return preset
