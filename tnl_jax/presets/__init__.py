"""The preset run configurations shipped with the package (``tnl-tiny`` ... ``tnl-15b``).

Each YAML file holds the training keys and a ``model:`` mapping of ``ModelConfig``
fields. ``resolve`` turns a preset name (``tnl-1b``) or a file path into a path;
``read`` gives its mapping, every problem naming the file.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

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
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} is not a file (a directory?); "
                             f"expected a YAML file or a preset name")
        return path
    preset = directory() / f"{name_or_path}.yaml"
    if not preset.exists():
        raise FileNotFoundError(f"config {str(name_or_path)!r}: neither a file nor a preset "
                                f"(presets: {', '.join(names())})")
    return preset


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep
    the last silently): a ``ValueError`` naming the key and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise ValueError(f"the key {key!r} is given twice (lines {lines[key]} and "
                                 f"{line}); keep one")
            lines[key] = line
        return super().construct_mapping(node, deep)


def read(name_or_path: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The path of a preset or YAML file and its top-level mapping (empty file: ``{}``);
    a file that is no YAML, or whose top level is no mapping, is a ``ValueError``
    naming the file."""
    path = resolve(name_or_path)
    try:
        with path.open() as stream:  # A stream: YAML's messages then name the file.
            document = yaml.load(stream, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text: {error}") from None
    except ValueError as error:  # _UniqueKeyLoader's: a key given twice.
        raise ValueError(f"config file {str(path)!r}: {error}") from None
    if document is None:
        return path, {}
    if not isinstance(document, dict):
        raise ValueError(f"config file {str(path)!r}: the top level must be a mapping of keys "
                         f"(like 'steps: 100'), got a {type(document).__name__}: "
                         f"{str(document)[:60]!r}")
    return path, document
