"""A scaling model of training: tokens/s and MFU of tnl-1b, 7b and 15b at 8, 64 and
512 GPUs, and the layout (data, fsdp, context, tensor) it recommends for each.

    python -m benchmarks.scaling.scaling_model            # the tables (compiles what is missing)
    python -m benchmarks.scaling.scaling_model --check    # the 1- and 2-GPU comparison only

Per step and device:
- compute: the model's training FLOPs (``model.counting``) of the device's share of
  the tokens, at a measured single-GPU efficiency (``figures.MEASURED_*``, cited);
- communication: the bytes every collective of the compiled step sends
  (``step_collectives``: the step compiled on fake CPU devices, read by
  ``training.collectives``), over NVLink where a collective's groups stay in a host of
  8 and over the network where they cross hosts (``figures``). The step is compiled at
  depths 2 and 3 and the per-layer bytes scaled to the preset's depth (the scan makes
  them linear in depth; ``--linearity`` checks it against a third depth);
- the context-parallel op's own extra time, from its measured ratio to one device's
  share (``figures.OP_SPLIT_X_SHARE``);
- no overlap: compute + communication; overlap: max(compute, the parameter
  collectives over data and fsdp) + what cannot hide: one layer's share of those (the
  first gather, the last reduction) and every tensor- and context-axis collective
  (on the layer's critical path).
Memory per device: 16 bytes per parameter (float32 weights, gradients, two AdamW
moments) over fsdp x tensor, and activations per token, layer and width unit for the
remat policy, fitted to the measured steps (``figures.MEASURED_MEMORY``).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.scaling import figures
from benchmarks.scaling.step_collectives import case_key, parse_case

PRESETS = ("tnl-1b", "tnl-7b", "tnl-15b")
DEVICE_COUNTS = (8, 64, 512)
DEPTHS = (2, 3)
CACHE = Path(__file__).parent / "results" / "collectives.jsonl"
PARAMETER_AXES = {"data", "fsdp"}
Mesh = tuple[int, int, int, int]  # data, fsdp, context, tensor


@functools.lru_cache(maxsize=None)
def model_config(preset: str):
    from tnl_jax.training import config as train_config
    return train_config.load(preset, []).model


@functools.lru_cache(maxsize=None)
def params_of(preset: str) -> int:
    from tnl_jax.model.counting import count_params
    return count_params(model_config(preset))


def flops_per_token(preset: str, row_length: int) -> float:
    from tnl_jax.model.counting import count_flops_per_token
    return count_flops_per_token(model_config(preset), row_length)


@dataclasses.dataclass(frozen=True)
class Case:
    """One step to predict: a preset (its depth, remat), the global rows, a mesh, the
    GPU (whose measured MFU sets the compute time)."""
    preset: str
    rows: int
    row_length: int
    mesh: Mesh
    overrides: tuple[str, ...] = ()
    gpu: str = "H100"

    @property
    def devices(self) -> int:
        return math.prod(self.mesh)

    @property
    def remat(self) -> str:
        given = [o.split("=", 1)[1] for o in self.overrides if o.startswith("model.remat=")]
        return given[-1] if given else model_config(self.preset).remat

    def at_depth(self, layers: int) -> str:
        return case_key({"preset": self.preset, "layers": layers, "rows": self.rows,
                         "row_length": self.row_length, "mesh": self.mesh,
                         "overrides": list(self.overrides)})


def read_cache(path: Path = CACHE) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def fill_cache(keys: list[str], path: Path = CACHE) -> dict[str, dict]:
    """Compiles the cases not in the cache (one subprocess per device count)."""
    cache = read_cache(path)
    missing: dict[int, list[str]] = {}
    for key in keys:
        if key not in cache:
            missing.setdefault(math.prod(parse_case(key)["mesh"]), []).append(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    for devices, cases in sorted(missing.items()):
        print(f"compiling {len(cases)} step(s) on {devices} fake devices", flush=True)
        command = [sys.executable, "-m", "benchmarks.scaling.step_collectives",
                   "--devices", str(devices), *(f"--case={c}" for c in cases)]
        with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=errors, text=True,
                cwd=Path(__file__).resolve().parents[2]) as process:
            for line in process.stdout:  # Each case kept as it comes.
                if line.startswith("{"):
                    with path.open("a") as f:
                        f.write(line)
            process.wait()
            errors.seek(0)
            error = errors.read()
        if process.returncode != 0:
            raise RuntimeError(f"step_collectives on {devices} devices failed:\n{error[-3000:]}")
    return read_cache(path)


def traffic_at_depth(cache: dict[str, dict], case: Case, layers: int) -> dict[str, float]:
    """Bytes per device per step by spanned axes at ``layers``, linear from DEPTHS."""
    low, high = (cache[case.at_depth(d)]["traffic"] for d in DEPTHS)
    span = DEPTHS[1] - DEPTHS[0]
    return {axes: low.get(axes, 0.0) + (layers - DEPTHS[0]) / span
            * (high.get(axes, 0.0) - low.get(axes, 0.0)) for axes in {*low, *high}}


def crosses_hosts(mesh: Mesh, axes: str) -> bool:
    """Whether a group along ``axes`` spans devices of different hosts (devices in mesh
    order, ``GPUS_PER_HOST`` consecutive ones to a host)."""
    names = ("data", "fsdp", "context", "tensor")
    strides = [math.prod(mesh[i + 1:]) for i in range(4)]
    last = sum((mesh[i] - 1) * strides[i] for i, n in enumerate(names) if n in axes.split(","))
    return last // figures.GPUS_PER_HOST > 0


def link_seconds(mesh: Mesh, traffic: dict[str, float]) -> tuple[float, float]:
    """(seconds of the parameter collectives, of the others) over the stated links."""
    param, other = 0.0, 0.0
    for axes, sent in traffic.items():
        rate = (figures.NETWORK_BYTES_PER_S if crosses_hosts(mesh, axes)
                else figures.NVLINK_BYTES_PER_S)
        if set(axes.split(",")) <= PARAMETER_AXES:
            param += sent / rate
        else:
            other += sent / rate
    return param, other


def efficiency(preset: str, remat: str, gpu: str = "H100") -> float:
    """Single-GPU MFU on ``gpu``: measured for the preset and policy; a preset not
    measured takes tnl-1b's; ``full`` remat runs the forward twice: 3/4 of
    ``projections``' MFU."""
    measured = figures.MEASURED_MFU[gpu]
    if (preset, remat) in measured:
        return measured[(preset, remat)]
    base = measured.get((preset, "projections"), measured[("tnl-1b", "projections")])
    if remat == "full":
        return base * 3 / 4
    return base


def cp_extra_seconds(case: Case, split_x_share: float | None = None) -> float:
    """The sequence-split op's time beyond one device's share, every layer (0 without a
    context axis), at ``split_x_share`` (the split op's time / the share's; default the
    measured ``figures.OP_SPLIT_X_SHARE``, of the order before LASP-2's: an upper bound
    until LASP-2's order is measured on two GPUs)."""
    if case.mesh[2] == 1:
        return 0.0
    ratio = figures.OP_SPLIT_X_SHARE if split_x_share is None else split_x_share
    cfg = model_config(case.preset)
    data, fsdp, context, tensor = case.mesh
    head_tokens = (case.rows * case.row_length / (data * fsdp * context)
                   * cfg.decoder_attention_heads / tensor)
    share_s = figures.OP_SHARE_MS / 1e3 * head_tokens / figures.OP_SHARE_HEAD_TOKENS
    return (ratio - 1) * share_s * cfg.decoder_layers


@dataclasses.dataclass
class Prediction:
    case: Case
    compute_s: float
    param_comm_s: float
    other_comm_s: float
    memory_gb: float

    @property
    def serial_s(self) -> float:
        return self.compute_s + self.param_comm_s + self.other_comm_s

    @property
    def overlapped_s(self) -> float:
        layers = model_config(self.case.preset).decoder_layers
        hidden = self.param_comm_s * (layers - 1) / layers
        return max(self.compute_s, hidden) + self.param_comm_s / layers + self.other_comm_s

    def tokens_per_s(self, overlap: bool) -> float:
        return self.case.rows * self.case.row_length / (
            self.overlapped_s if overlap else self.serial_s)

    def mfu(self, overlap: bool) -> float:
        flops = flops_per_token(self.case.preset, self.case.row_length)
        return self.tokens_per_s(overlap) * flops / (self.case.devices * figures.PEAK_FLOPS)


def activation_bytes_per_unit(remat: str) -> float:
    """Activation bytes per token, layer and width unit kept by ``remat`` (``full``:
    a layer's bf16 input, plus one layer of ``none`` while it is recomputed, which
    ``memory_gb`` adds), fitted to the measured steps."""
    fitted = {}
    for preset, policy, tokens, gib in figures.MEASURED_MEMORY:
        cfg = model_config(preset)
        units = tokens * cfg.decoder_layers * cfg.decoder_embed_dim
        fitted.setdefault(policy, []).append((gib * 2**30 - 16 * params_of(preset)) / units)
    if remat == "full":
        return 2.0
    if remat not in fitted:
        raise ValueError(f"model.remat={remat!r}: no measured memory to fit (have "
                         f"{sorted(fitted)} and full)")
    return max(fitted[remat])


def memory_gb(case: Case) -> float:
    """Estimated peak bytes per device (GB): sharded parameter state, activations and
    (fsdp) the head's whole gradient."""
    cfg = model_config(case.preset)
    data, fsdp, context, tensor = case.mesh
    tokens = case.rows * case.row_length / (data * fsdp * context)
    state = 16 * params_of(case.preset) / (fsdp * tensor)
    width = tokens * cfg.decoder_embed_dim / tensor
    activations = activation_bytes_per_unit(case.remat) * width * cfg.decoder_layers
    if case.remat == "full":
        activations += activation_bytes_per_unit("none") * width
    # Under fsdp the head's gradient, summed over the loss chunks on each device before
    # its one reduction (``training.losses``), is whole: float32, split only over tensor.
    head = 4 * cfg.vocab_size * cfg.decoder_embed_dim / tensor if fsdp > 1 else 0.0
    return (state + activations + head) / 1e9


def predict(case: Case, cache: dict[str, dict], mfu: float | None = None,
            split_x_share: float | None = None) -> Prediction:
    """The case's step: compute at ``mfu`` (default: ``efficiency``), the cached
    collectives over the links, the context op's extra (``cp_extra_seconds``), the
    memory estimate."""
    layers = model_config(case.preset).decoder_layers
    flops = flops_per_token(case.preset, case.row_length) * case.rows * case.row_length
    mfu = efficiency(case.preset, case.remat, case.gpu) if mfu is None else mfu
    compute = (flops / case.devices / (figures.PEAK_FLOPS * mfu)
               + cp_extra_seconds(case, split_x_share))
    param, other = (link_seconds(case.mesh, traffic_at_depth(cache, case, layers))
                    if case.devices > 1 else (0.0, 0.0))
    return Prediction(case, compute, param, other, memory_gb(case))


def candidate_meshes(devices: int) -> list[Mesh]:
    """The layouts searched (DP across hosts in each): DP; FSDP over a host; over a
    host FSDP=4 with TP=2 or with CP=2. (Every layout compiles twice: the search is
    kept to these four; ``predict`` takes any mesh.)"""
    host = min(devices, figures.GPUS_PER_HOST)
    across = devices // host
    meshes = [(devices, 1, 1, 1), (across, host, 1, 1), (across, host // 2, 1, 2),
              (across, host // 2, 2, 1)]
    return list(dict.fromkeys(m for m in meshes if math.prod(m) == devices))


def fitting_cases(preset: str, meshes: list[Mesh], tokens_per_gpu: int, row_length: int,
                  memory_limit_gb: float, gpu: str = "H100") -> list[Case]:
    """The cases of ``meshes`` whose rows split and whose memory estimate fits."""
    cases = []
    for mesh in meshes:
        rows = math.prod(mesh) * tokens_per_gpu // row_length
        case = Case(preset, rows, row_length, mesh, gpu=gpu)
        if rows % (mesh[0] * mesh[1]) == 0 and memory_gb(case) <= memory_limit_gb:
            cases.append(case)
    return cases


def search(preset: str, tokens_per_gpu: int, row_length: int, memory_limit_gb: float,
           gpu: str = "H100") -> list[Prediction]:
    """Every candidate layout that fits on one host (``GPUS_PER_HOST``), compiled and
    predicted; at 64 and 512 GPUs, the best host layout with DP across the hosts
    (each layout compiles twice, minutes on 2 CPU cores: the search stays in a host)."""
    host = figures.GPUS_PER_HOST
    cases = fitting_cases(preset, candidate_meshes(host), tokens_per_gpu, row_length,
                          memory_limit_gb, gpu)
    cache = fill_cache([c.at_depth(d) for c in cases for d in DEPTHS])
    found = [predict(c, cache) for c in cases]
    if not found:
        return []
    best = max(found, key=lambda p: p.tokens_per_s(True)).case.mesh
    wider = [(n // host * best[0], *best[1:]) for n in DEVICE_COUNTS if n > host]
    cases = fitting_cases(preset, wider, tokens_per_gpu, row_length, memory_limit_gb, gpu)
    cache = fill_cache([c.at_depth(d) for c in cases for d in DEPTHS])
    return found + [predict(c, cache) for c in cases]


def calibration_cases() -> list[tuple[str, Case, float]]:
    """The measured 1- and 2-GPU rows as cases: (name, case, measured tokens/s)."""
    return [(name, Case("tnl-385m", rows, length, mesh, ("model.remat=none",)), tokens)
            for name, _, rows, length, mesh, tokens in figures.MEASURED_TWO_GPU]


def check_table(cache: dict[str, dict]) -> tuple[str, float]:
    """Predicted (no overlap: the measured runs reduced after the backward) against
    measured tokens/s of the 1- and 2-GPU rows, each at its 1-GPU row's efficiency;
    and the largest relative error."""
    measured = {name: tokens for name, _, tokens in calibration_cases()}
    lines = ["| run | measured tokens/s | predicted | predicted / measured | × 1 GPU "
             "measured | × 1 GPU predicted |", "|---|---|---|---|---|---|"]
    worst = 0.0
    for name, case, tokens in calibration_cases():
        base_name = figures.ONE_GPU_BASE[case.row_length]
        base = next(c for n, c, _ in calibration_cases() if n == base_name)
        mfu = (measured[base_name] * flops_per_token("tnl-385m", base.row_length)
               / figures.PEAK_FLOPS)
        predicted = predict(case, cache, mfu).tokens_per_s(overlap=False)
        error = predicted / tokens - 1
        worst = max(worst, abs(error))
        per_gpu = measured["1 GPU 4x8K"]
        lines.append(f"| {name} | {tokens / 1e3:.1f}K | {predicted / 1e3:.1f}K | "
                     f"{predicted / tokens:.3f} | {tokens / per_gpu:.2f} | "
                     f"{predicted / per_gpu:.2f} |")
    return "\n".join(lines), worst


def layout_name(mesh: Mesh) -> str:
    parts = [f"{n}={s}" for n, s in zip(("DP", "FSDP", "CP", "TP"), mesh) if s > 1]
    return " x ".join(parts) or "1 GPU"


def prediction_table(predictions: list[Prediction]) -> str:
    """Every layout that fits, the recommended one (most tokens/s with overlap) first
    in each (preset, device count) group, marked."""
    lines = ["| model | GPUs | layout | GB/GPU | comm s (param / other) | compute s | "
             "tokens/s serial | MFU serial | tokens/s overlap | MFU overlap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, int], list[Prediction]] = {}
    for p in predictions:
        groups.setdefault((p.case.preset, p.case.devices), []).append(p)
    for (preset, devices), group in groups.items():
        group.sort(key=lambda p: -p.tokens_per_s(True))
        for rank, p in enumerate(group):
            mark = " **(recommended)**" if rank == 0 else ""
            lines.append(
                f"| {preset} | {devices} | {layout_name(p.case.mesh)}{mark} | "
                f"{p.memory_gb:.0f} | {p.param_comm_s:.3f} / {p.other_comm_s:.3f} | "
                f"{p.compute_s:.3f} | {p.tokens_per_s(False) / 1e3:.0f}K | "
                f"{100 * p.mfu(False):.1f}% | {p.tokens_per_s(True) / 1e3:.0f}K | "
                f"{100 * p.mfu(True):.1f}% |")
    return "\n".join(lines)


def linearity_table(cases: list[Case], depth: int) -> str:
    """Bytes at ``depth`` compiled against the DEPTHS line's value there."""
    cache = fill_cache([c.at_depth(depth) for c in cases])
    lines = [f"| case | compiled at {depth} layers (GB/device) | from depths {DEPTHS} | ratio |",
             "|---|---|---|---|"]
    for case in cases:
        compiled = sum(cache[case.at_depth(depth)]["traffic"].values())
        line = sum(traffic_at_depth(cache, case, depth).values())
        lines.append(f"| {case.at_depth(depth)} | {compiled / 1e9:.3f} | {line / 1e9:.3f} | "
                     f"{line / compiled:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="the 1-/2-GPU comparison only")
    parser.add_argument("--tokens-per-gpu", type=int, default=16384)
    parser.add_argument("--row-length", type=int, default=8192)
    parser.add_argument("--gpu", choices=sorted(figures.MEMORY_GB), default="H100")
    parser.add_argument("--linearity", type=int, default=0,
                        help="also compile the first case at this depth")
    args = parser.parse_args(argv)
    calibration = [case for _, case, _ in calibration_cases() if case.devices > 1]
    cache = fill_cache([c.at_depth(d) for c in calibration for d in DEPTHS])
    table, worst = check_table(cache)
    print(f"Against the measured 1- and 2-GPU runs (tnl-385m, H200):\n\n{table}\n\n"
          f"largest error {100 * worst:.1f}% ({'within' if worst <= 0.1 else 'NOT within'} 10%)")
    if args.check:
        return
    limit = 0.9 * figures.MEMORY_GB[args.gpu] / 1e9
    print(f"\n{args.gpu}, {args.tokens_per_gpu} tokens per GPU in rows of {args.row_length}, "
          f"layouts under {limit:.0f} GB per GPU:\n")
    predictions = [p for preset in PRESETS
                   for p in search(preset, args.tokens_per_gpu, args.row_length, limit,
                                   args.gpu)]
    print(prediction_table(predictions))
    if args.linearity:
        print("\n" + linearity_table([predictions[0].case], args.linearity))

if __name__ == "__main__":
    main()
