"""TensorBoard event files beside ``metrics.jsonl``, from the optional extra
``tnl-jax[tensorboard]`` (the ``tensorboardX`` writer: no TensorFlow, no PyTorch).

The ``tensorboard`` key: ``auto`` writes when the package is installed, ``true`` (or
``on``) always (the config check names the extra when it is missing), ``false`` (or
``off``) never. Only process 0 writes, into ``<run_dir>/tensorboard``; view with
``tensorboard --logdir <run_dir>``. A resumed run hides the earlier events of the steps
it trains again (``purge_step``), as ``metrics.read_metrics`` keeps the newest record.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

PACKAGE = "tensorboardX"
INSTALL = "pip install 'tnl-jax[tensorboard]' (in a checkout: pip install -e '.[tensorboard]')"
DIRECTORY = "tensorboard"  # Inside run_dir.
FLUSH_SECONDS = 10  # How stale a TensorBoard being watched may be.


def available() -> bool:
    """Whether the writer's package is installed (looked up, not imported)."""
    return importlib.util.find_spec(PACKAGE) is not None


def setting_problems(value: Any) -> list[str]:
    """``[]`` for a usable ``tensorboard`` setting, else the one problem (``true``
    without the package names the extra to install)."""
    if not (value == "auto" if isinstance(value, str) else isinstance(value, bool)):
        return [f"tensorboard={value!r}: expected auto (when {PACKAGE} is installed), true or "
                f"on (always), false or off (never)"]
    if value is True and not available():
        return [f"tensorboard=True: the {PACKAGE} package is not installed; {INSTALL}, or set "
                f"tensorboard=auto or tensorboard=false"]
    return []


def writes(setting: Any) -> bool:
    """Whether a run with this ``tensorboard`` setting writes event files."""
    return setting is True or (setting == "auto" and available())


class EventLog:
    """Every number of a metrics record as a scalar of its step (tag: the record's key)."""

    def __init__(self, directory: Path, start_step: int = 0):
        from tensorboardX import SummaryWriter  # The optional extra: only when used.
        self.directory = directory
        self.writer = SummaryWriter(str(directory), flush_secs=FLUSH_SECONDS,
                                    purge_step=start_step + 1 if start_step else None)

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


def open_event_log(setting: Any, run_dir: Path, start_step: int, is_main: bool
                   ) -> EventLog | None:
    """The run's event log (process 0, when ``setting`` writes), else None."""
    if not (is_main and writes(setting)):
        return None
    return EventLog(run_dir / DIRECTORY, start_step)
