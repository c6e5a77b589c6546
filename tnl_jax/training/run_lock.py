"""One trainer per run directory: an exclusive lock on ``{run_dir}/trainer.lock``.

Two trainers in one ``run_dir`` would interleave their checkpoints and metrics. The
lock is the kernel's (``fcntl.flock``), which is released when its process ends,
however it ends (``kill -9`` included); the file also records the holder (pid,
host, the process's start time), so that a refusal names it. A record left by a
process that no longer holds the lock is stale: it is taken over with a message.
As a second guard (for filesystems whose locks are not real), a record naming a
live process of this host is never taken over. The holder removes the file when it
releases the lock. With several processes, only process 0 locks.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_FILE = "trainer.lock"


class RunDirLocked(RuntimeError):
    """Another trainer holds the run directory."""


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, Linux's /proc), to tell
    a reused pid from the process that wrote a lock; None where /proc has no answer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # Field 22; fields 1-2 end with ')'.


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds (or held) a run directory's lock."""
    pid: int
    host: str
    started: int | None = None  # _start_ticks(pid) when it locked.
    since: str = ""

    @classmethod
    def me(cls) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), _start_ticks(os.getpid()),
                   time.strftime("%Y-%m-%d %H:%M:%S"))

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}" + (f" (since {self.since})"
                                                        if self.since else "")

    def alive_here(self) -> bool:
        """Whether this is a running process of this host (the pid not reused since)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # Alive, another user's.
            pass
        return self.started is None or _start_ticks(self.pid) in (None, self.started)


def _read_holder(path: Path) -> Holder | str | None:
    """The holder recorded in ``path``: None when there is no record, its text when it
    is not a whole one (a process killed while writing it)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        holder = Holder(**json.loads(text)) if text else None
    except (ValueError, TypeError):
        return text
    return holder if holder is None or isinstance(holder.pid, int) else text


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir`` for this process (``hold=False``:
    does nothing, for the processes other than 0 of a multi-process run)."""

    def __init__(self, run_dir: str | Path, hold: bool = True):
        self.run_dir, self.hold = Path(run_dir), hold
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        if self.hold:
            self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Locks the run directory or raises ``RunDirLocked`` naming the holder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = self._lock_file()
        previous = _read_holder(self.path)
        ours = isinstance(previous, Holder) and previous.pid == os.getpid()
        if isinstance(previous, Holder) and not ours and previous.alive_here():
            os.close(fd)
            raise self._locked(previous, "; it holds no kernel lock on the file (a "
                                         "filesystem without locks?), but it is running")
        if previous is not None:
            who = previous.describe() if isinstance(previous, Holder) else f"record {previous!r}"
            print(f"{self.path}: taking over the stale lock of {who}: no process holds it "
                  f"any more", flush=True)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(dataclasses.asdict(Holder.me())).encode())
        os.fsync(fd)
        self._fd = fd

    def _lock_file(self) -> int:
        """A descriptor of the lock file, locked; ``RunDirLocked`` if another holds it.

        The file is checked to be the one at ``path`` after locking: a holder that
        releases removes its file, and a lock on a removed file protects nothing."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._locked(_read_holder(self.path), "") from None
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _locked(self, holder: Holder | str | None, detail: str) -> RunDirLocked:
        who = (holder.describe() if isinstance(holder, Holder)
               else "a process that has not written its record yet")
        return RunDirLocked(
            f"run_dir {self.run_dir} is in use by another trainer: {who} holds "
            f"{self.path}{detail}. Wait for it to end or stop it, or choose another run_dir.")

    def release(self) -> None:
        """Removes the record and unlocks (the file goes first: see ``_lock_file``)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # Closing the last descriptor releases the flock.
            self._fd = None
