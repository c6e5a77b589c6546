"""The collectives of one training step compiled on fake CPU devices, per mesh axis.

    python -m benchmarks.scaling.step_collectives --devices 8 \
        --case tnl-1b:2:16:8192:1,8,1,1 --case tnl-1b:3:16:8192:1,8,1,1

A case is ``preset:layers:rows:row_length:data,fsdp,context,tensor[:override ...]`` (the
preset's depth cut to ``layers``; rows and row length global). Nothing is allocated:
the step (``training.steps.make_train_step``, AdamW, the preset's remat) is lowered
for abstract parameters, optimizer state and batch in the trainer's shardings and
compiled; ``tnl_jax.training.collectives`` reads its collectives. Prints one JSON line
per case: the bytes each device sends per step by the mesh axes a collective spans,
and the count of collectives. The device count is fixed when jax starts, so the
scaling model runs this once per device count, in a subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_case(text: str) -> dict:
    """``preset:layers:rows:row_length:d,f,c,t[:key=value ...]`` -> its fields."""
    parts = text.split(":")
    if len(parts) < 5:
        raise ValueError(f"--case {text!r}: expected preset:layers:rows:row_length:"
                         "data,fsdp,context,tensor[:key=value...]")
    mesh = tuple(int(x) for x in parts[4].split(","))
    if len(mesh) != 4:
        raise ValueError(f"--case {text!r}: the mesh needs 4 sizes (data,fsdp,context,tensor)")
    return {"preset": parts[0], "layers": int(parts[1]), "rows": int(parts[2]),
            "row_length": int(parts[3]), "mesh": mesh, "overrides": parts[5:]}


def case_key(case: dict) -> str:
    """The cache key of a case (its text, normalised)."""
    return ":".join([case["preset"], str(case["layers"]), str(case["rows"]),
                     str(case["row_length"]), ",".join(map(str, case["mesh"])),
                     *case["overrides"]])


def compiled_step_text(case: dict) -> tuple[str, object]:
    """The HLO text of the case's compiled step, and its mesh."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from tnl_jax import data
    from tnl_jax.model import create_model
    from tnl_jax.training import config as train_config
    from tnl_jax.training import optim, sharding
    from tnl_jax.training.loop import _state_shardings
    from tnl_jax.training.steps import make_train_step

    d, f, c, t = case["mesh"]
    cfg = train_config.load(case["preset"], [
        f"model.decoder_layers={case['layers']}", f"batch_size={case['rows']}",
        f"seq_len={case['row_length']}", f"mesh.data={d}", f"mesh.fsdp={f}",
        f"mesh.context={c}", f"mesh.tensor={t}", *case["overrides"]])
    mesh = sharding.make_mesh(d, f, c, t)
    create = lambda: create_model(cfg.model, nnx.Rngs(0))
    graphdef, params, _ = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
    rest = jax.jit(lambda: nnx.split(create(), nnx.Param, ...)[2])()
    settings = ("lr", "warmup", "steps", "min_lr_ratio", "weight_decay", "beta1", "beta2",
                "grad_clip")
    tx, schedule = optim.adamw(params, nnx.get_partition_spec(params),
                               **{name: getattr(cfg, name) for name in settings})
    state_sharding = _state_shardings(tx, sharding.param_shardings(params, mesh), params, mesh)
    state = {"params": params, "opt_state": jax.eval_shape(tx.init, params),
             "step": jax.ShapeDtypeStruct((), jnp.int32)}
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         state, state_sharding)
    rows = sharding.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct((cfg.batch_size, cfg.seq_len),
                                     jnp.float32 if k == "loss_mask" else jnp.int32,
                                     sharding=rows) for k in data.BATCH_KEYS}
    step = jax.jit(make_train_step(graphdef, rest, tx, schedule, cfg.grad_accum,
                                   cfg.loss_chunk_tokens),
                   out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)
    with jax.set_mesh(mesh):
        return step.lower(state, batch).compile().as_text(), mesh


def case_collectives(case: dict) -> dict:
    """The case's per-step traffic per device by spanned axes (bytes) and its
    collective count."""
    from tnl_jax.training.collectives import read_collectives, traffic_by_axes

    start = time.perf_counter()
    text, mesh = compiled_step_text(case)
    found = read_collectives(text, mesh)
    return {"key": case_key(case), "devices": mesh.devices.size,
            "traffic": {",".join(axes) or "-": b for axes, b in traffic_by_axes(found).items()},
            "collectives": len(found), "compile_s": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, required=True, help="fake CPU devices")
    parser.add_argument("--case", action="append", required=True, help="see the docstring")
    args = parser.parse_args(argv)
    cases = [parse_case(c) for c in args.case]
    os.environ["JAX_PLATFORMS"] = "cpu"  # before jax starts (imported by the cases)
    os.environ["XLA_FLAGS"] = " ".join(
        [f for f in os.environ.get("XLA_FLAGS", "").split()
         if "force_host_platform_device_count" not in f]
        + [f"--xla_force_host_platform_device_count={args.devices}",
           # LLVM at -O0: a third less compile time, the same HLO and collectives.
           "--xla_backend_optimization_level=0"])
    for case in cases:
        print(json.dumps(case_collectives(case)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
