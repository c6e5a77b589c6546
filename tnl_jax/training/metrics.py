"""Run metrics: a JSONL log that survives restarts, MFU, peak memory, the loss plot."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax

class DevicePeaks(NamedTuple):
    """A device's data-sheet peaks."""
    bf16_flops: float   # dense FLOP/s of bfloat16 matrix products
    memory_tbps: float  # memory bandwidth, TB/s


# The peaks by substring of `device_kind`, the first match winning (so a PCIe or 40GB
# variant is listed before its family). float32 training on these GPUs reaches far
# less; MFU is always quoted against the bf16 peak, as is customary. Decode floors
# (benchmarks/generation) read the bandwidth.
DEVICE_PEAKS = {
    "H200": DevicePeaks(989e12, 4.8),
    "H100 PCIe": DevicePeaks(756e12, 2.0),
    "H100": DevicePeaks(989e12, 3.35),
    "A100-SXM4-40GB": DevicePeaks(312e12, 1.555),
    "A100-PCIE-40GB": DevicePeaks(312e12, 1.555),
    "A100 80GB PCIe": DevicePeaks(312e12, 1.935),
    "A100": DevicePeaks(312e12, 2.039),
    "L40S": DevicePeaks(362e12, 0.864),
    "A10": DevicePeaks(125e12, 0.6),
    "V100": DevicePeaks(125e12, 0.9),
}


def device_peaks(device_kind: str) -> DevicePeaks | None:
    """The table's peaks for a ``device_kind`` (``jax.Device.device_kind``); None for a
    kind not in it (every CPU: no single peak to quote)."""
    for name, peaks in DEVICE_PEAKS.items():
        if name.lower() in device_kind.lower():
            return peaks
    return None


def bf16_peak(device_kind: str) -> float | None:
    """The table's bf16 peak for ``device_kind``; None for a kind not in it."""
    peaks = device_peaks(device_kind)
    return None if peaks is None else peaks.bf16_flops


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """The table's bf16 peak for this kind of device; None for a device not in it
    (every CPU), and then no MFU is reported."""
    device = device or jax.devices()[0]
    return None if device.platform == "cpu" else bf16_peak(device.device_kind)


def mfu(tokens_per_s: float, flops_per_token: float, device_count: int,
        device_kind: str | None = None) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the devices' peak; the
    peak of ``device_kind`` if given (a saved row's device, read on another machine),
    else of this process's device."""
    peak = peak_flops_per_device() if device_kind is None else bf16_peak(device_kind)
    return None if peak is None else tokens_per_s * flops_per_token / (peak * device_count)


class Throughput:
    """Tokens/s and MFU between successive reads of the step counter (the first read
    of a process includes compilation and gives nothing), and the mean time of a step
    over every timed interval (``seconds_per_step``: what the time left is reckoned
    from)."""

    def __init__(self, tokens_per_step: int, flops_per_token: float):
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.last: tuple[int, float] | None = None
        self.timed_steps, self.timed_seconds = 0, 0.0

    def update(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        out: dict[str, float] = {}
        if self.last is not None and step > self.last[0]:
            steps, seconds = step - self.last[0], now - self.last[1]
            self.timed_steps += steps
            self.timed_seconds += seconds
            rate = steps * self.tokens_per_step / seconds
            out["tokens_per_s"] = rate
            utilisation = mfu(rate, self.flops_per_token, jax.device_count())
            if utilisation is not None:
                out["mfu"] = utilisation
        self.last = (step, now)
        return out

    def seconds_per_step(self) -> float | None:
        """The mean time of a timed step so far; None before one is timed."""
        return self.timed_seconds / self.timed_steps if self.timed_steps else None

    def pause(self) -> None:
        """Time from here to the next read (evaluation, a checkpoint) is not counted."""
        self.last = None if self.last is None else (self.last[0], time.perf_counter())


def peak_memory_bytes() -> int | None:
    """The largest peak allocation over this process's devices, when the backend reports it."""
    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"])
    return max(peaks) if peaks else None


class MetricsLog:
    """`metrics.jsonl`: one JSON object per line, appended by process 0 only; never
    truncated or rewritten. Each record also goes to ``events`` (TensorBoard event
    files, ``tensorboard.EventLog``) when given.

    A resumed run appends the steps after its checkpoint again, which the interrupted
    run may have logged already: `read_metrics` reads the newest record of each step.
    A torn last line (a process killed while writing it) is ended first, so that it
    stays a line of its own, skipped when read.
    """

    def __init__(self, path: Path, writer: bool = True, events: Any = None):
        self.path = path
        self.writer = writer
        self.events = events
        if writer and path.exists() and path.stat().st_size:
            with path.open("rb+") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def write(self, record: dict[str, Any]) -> None:
        if self.writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.events is not None:
            self.events.write(record)

    def close(self) -> None:
        """Flushes and closes the event files (the JSONL file is closed after each line)."""
        if self.events is not None:
            self.events.close()


PLOTTED = ("loss", "eval_loss")  # The values of a record that must be numbers.


def _record(line: bytes) -> dict[str, Any] | None:
    """The record of one line of a metrics file: a JSON object whose ``step`` is an
    integer and whose losses (the plotted values) are numbers; None for anything else."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not (isinstance(record, dict) and type(record.get("step")) is int):
        return None
    numbers = all(isinstance(record[k], (int, float)) and not isinstance(record[k], bool)
                  for k in PLOTTED if k in record)
    return record if numbers else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file by step, the newest record of a step where a
    resumed run logged it again; a torn (partly written) last line is skipped, and so
    is any other line that is no record (not UTF-8, not JSON, a ``step`` that is no
    integer, a loss that is no number), with one warning naming how many and the first."""
    if not path.exists():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    bad = []
    for number, line in enumerate(lines, 1):
        record = _record(line)
        if record is None:
            bad.append(number)
        else:
            by_step[record["step"]] = record
    torn = bad == [len(lines)]  # Only the last line: a process killed while writing it.
    if bad and not torn:
        warnings.warn(f"{path}: skipped {len(bad)} line(s) that are no metrics record (line "
                      f"{bad[0]}: {lines[bad[0] - 1][:60]!r})", stacklevel=2)
    return sorted(by_step.values(), key=lambda r: r["step"])


def plot_losses(records: list[dict[str, Any]], path: Path) -> None:
    """Training loss per step and held-out loss, one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    held_out = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if held_out:
        ax.plot(*zip(*held_out), "o-", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
