"""The errors a run stops with when the cause is outside the program, each one message
that names the key or file, the cause and what to do (the command line prints it alone):

- ``StartError``: the run cannot start as configured (exit status 2);
- ``DataReadError``: a data file could not be read while training (exit status 2);
- ``StorageError``: the run directory could not be written: disk full, file too large,
  read-only, no permission (the cause is often buried under Orbax's and asyncio's
  tracebacks: ``os_cause`` digs it out).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
from typing import Iterator

# What an OSError of writing means for a run directory.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES,
                  errno.EPERM}


class StartError(ValueError):
    """A run cannot start as configured; the message names the key, value and remedy."""


class DataReadError(ValueError):
    """A data file could not be read while training (deleted, unreadable, not text)."""


class StorageError(RuntimeError):
    """The run directory could not be written; the message names the cause."""


def os_cause(error: BaseException, errnos: set[int] | None = None) -> OSError | None:
    """The first ``OSError`` (of ``errnos``, if given) in ``error``, its causes and
    contexts, and the members of exception groups (a TensorStore error that reports an
    OS error code counts as that ``OSError``)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found = current if isinstance(current, OSError) else _tensorstore_os_error(current)
        if found is not None and (errnos is None or found.errno in errnos):
            return found
        pending += [current.__cause__, current.__context__,
                    *getattr(current, "exceptions", ())]
    return None


def _tensorstore_os_error(error: BaseException) -> OSError | None:
    """The ``OSError`` that a TensorStore error (a ``ValueError`` whose message ends with
    ``[os_error_code='27']``, under Orbax's array writes) stands for, if any."""
    code = re.search(r"os_error_code='(\d+)'", str(error))
    if code is None:
        return None
    where = re.search(r'Failed writing: "([^"]+)"', str(error))
    number = int(code.group(1))
    return OSError(number, os.strerror(number), where.group(1) if where else None)


def describe_os_error(error: OSError) -> str:
    """``'<file>: <cause> (<ERRNO name>)'``, as much of it as the error holds."""
    name = errno.errorcode.get(error.errno or -1)
    cause = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{cause}" + (f" ({name})" if name else "")


@contextlib.contextmanager
def as_start_errors(keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turns the ``ValueError``s and ``OSError``s of a start into ``StartError``s, all
    but those of the types in ``keep`` (errors with a meaning of their own)."""
    try:
        yield
    except (StartError, *keep):
        raise
    except OSError as error:
        raise StartError(describe_os_error(error)) from error
    except ValueError as error:
        raise StartError(str(error)) from error


@contextlib.contextmanager
def reading_data(source: str, step: int, last_saved: int | None) -> Iterator[None]:
    """Turns an error reading the batch of ``step`` into a ``DataReadError`` naming the
    source, the file and cause, and the checkpoint a rerun resumes from."""
    try:
        yield
    except (OSError, ValueError) as error:
        cause = describe_os_error(error) if isinstance(error, OSError) else str(error)
        resume = (f"a rerun resumes from step {last_saved}" if last_saved
                  else "no checkpoint was saved yet")
        raise DataReadError(f"data={source!r}: reading the batch of step {step}: {cause}. "
                            f"Restore or fix the file; {resume}") from error


@contextlib.contextmanager
def writing_run_dir(run_dir: str) -> Iterator[None]:
    """Turns a failed write under ``run_dir`` (found anywhere in the error's causes)
    into a ``StorageError`` naming the file and cause."""
    try:
        yield
    except (StartError, DataReadError, StorageError):
        raise
    except Exception as error:
        cause = os_cause(error, STORAGE_ERRNOS)
        if cause is None:
            raise
        raise StorageError(f"run_dir={run_dir!r}: cannot write: {describe_os_error(cause)}. "
                           f"Checkpoints saved before are intact; free space or fix the "
                           f"permissions, then rerun to resume") from error
