"""The progress of a run as a person watches it: step, loss, tokens/s and the time
left, estimated from the measured time of a training step (``metrics.Throughput``;
compilation, evaluation and checkpoints not counted). On a terminal it is a tqdm bar;
otherwise (a log file, a job's output) a plain line every ``log_every`` steps."""
from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm


def duration(seconds: float) -> str:
    """``"42s"``, ``"3m05s"``, ``"2h07m"`` (rounded down to the unit shown last)."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def status(step: int, steps: int, record: dict[str, Any], seconds_per_step: float | None
           ) -> str:
    """``"loss 2.3140 | 12,345 tok/s | 0.210 s/step | 3m09s left"``: the parts known
    so far (before a step is timed, only the loss)."""
    parts = [f"loss {record['loss']:.4f}"]
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    if seconds_per_step is not None:
        parts += [f"{seconds_per_step:.3g} s/step",
                  f"{duration((steps - step) * seconds_per_step)} left"]
    return " | ".join(parts)


class Progress:
    """Shows a run's progress from ``start`` to ``steps``: a tqdm bar when
    ``interactive`` (default: standard error is a terminal), else a line
    ``step N/steps | status`` on ``file`` (standard output) every ``log_every`` steps
    and at the last. Nothing when not ``enabled`` (processes other than 0)."""

    def __init__(self, steps: int, start: int, log_every: int, *, enabled: bool = True,
                 interactive: bool | None = None, file: TextIO | None = None):
        self.steps, self.log_every, self.enabled = steps, log_every, enabled
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.file = file
        self.bar = None
        if enabled and self.interactive:
            self.bar = tqdm(total=steps, initial=start, dynamic_ncols=True, file=file,
                            bar_format="{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}] {postfix}")

    def update(self, step: int, record: dict[str, Any], seconds_per_step: float | None
               ) -> None:
        """Shows ``record`` (with its ``loss``, maybe ``tokens_per_s``) of ``step``."""
        if not self.enabled:
            return
        line = status(step, self.steps, record, seconds_per_step)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(line, refresh=True)
        elif step % self.log_every == 0 or step == self.steps:
            print(f"step {step}/{self.steps} | {line}", file=self.file or sys.stdout,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
