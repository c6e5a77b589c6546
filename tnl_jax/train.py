"""The training loop: `main(cfg)` trains, evaluates, checkpoints and reports.

Read top to bottom: set up the mesh, data, model and optimizer; restore the
newest checkpoint of `run_dir` if there is one; then step, log, evaluate and
save until `steps`; finally plot the losses and print a sample.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from tnl_jax import data, metrics, optim, sharding, train_config
from tnl_jax.checkpoint import RunCheckpoints
from tnl_jax.model import count_flops_per_token, create_model
from tnl_jax.tokenizers import get_tokenizer
from tnl_jax.train_config import TrainConfig


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def token_losses(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State,
                 batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Per-token cross entropy (B, T) and whether the top prediction was right."""
    model = nnx.merge(graphdef, params, rest)
    logits = model(batch["input_ids"], segment_ids=batch["segment_ids"],
                   positions=batch["positions"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return losses, jnp.argmax(logits, -1) == batch["targets"]


def _microbatches(batch: dict[str, jax.Array], count: int) -> dict[str, jax.Array]:
    """(B, T) -> (count, B / count, T), row r of microbatch j being row r * count + j,
    so that each device's rows stay on it."""
    return {k: v.reshape(v.shape[0] // count, count, *v.shape[1:]).swapaxes(0, 1)
            for k, v in batch.items()}


def make_train_step(graphdef, rest, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum: int):
    """One optimizer step on a global batch, its gradient summed over `grad_accum` parts."""

    def loss_sum(params, batch):
        losses, _ = token_losses(graphdef, params, rest, batch)
        return jnp.sum(losses * batch["loss_mask"]), jnp.sum(batch["loss_mask"])

    def step(state, batch):
        params = state["params"]

        def accumulate(carry, micro):
            grads, total, count = carry
            (micro_total, micro_count), micro_grads = jax.value_and_grad(
                loss_sum, has_aux=True)(params, micro)
            grads = jax.tree.map(jnp.add, grads, micro_grads)
            return (grads, total + micro_total, count + micro_count), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, total, count), _ = jax.lax.scan(
            accumulate, (zeros, 0.0, 0.0), _microbatches(batch, grad_accum))
        count = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
                     "step": state["step"] + 1}
        stats = {"loss": total / count, "grad_norm": optax.tree.norm(grads),
                 "lr": schedule(state["step"])}
        return new_state, stats

    return step


def make_eval_step(graphdef, rest):
    def evaluate(params, batch):
        losses, correct = token_losses(graphdef, params, rest, batch)
        mask = batch["loss_mask"]
        return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask),
                "count": jnp.sum(mask)}
    return evaluate


def evaluate(eval_fn, params, batches: list[dict], mesh) -> dict[str, float]:
    """Mean held-out loss per target token (and top-1 accuracy) over fixed batches."""
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for batch in batches:
        out = eval_fn(params, sharding.global_batch(batch, mesh))
        for k in totals:
            totals[k] += float(out[k])
    count = max(totals["count"], 1.0)
    return {"eval_loss": totals["loss_sum"] / count, "eval_accuracy": totals["correct"] / count}


def _state_shardings(tx, params_sharding, params, mesh):
    """Optimizer moments follow their parameter's sharding; counters are replicated."""
    abstract_opt = jax.eval_shape(tx.init, params)
    opt_sharding = optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt, params_sharding,
        transform_non_params=lambda _: sharding.replicated(mesh))
    return {"params": params_sharding, "opt_state": opt_sharding,
            "step": sharding.replicated(mesh)}


def initial_params(cfg: TrainConfig, mesh) -> tuple[nnx.GraphDef, nnx.State, nnx.State, Any]:
    """The model's graph, parameters created directly in their shardings, other state."""
    def create():
        return create_model(cfg.model, nnx.Rngs(cfg.seed))

    graphdef, abstract_params, rest = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
    shardings = sharding.param_shardings(abstract_params, mesh)
    params = jax.jit(lambda: nnx.split(create(), nnx.Param, ...)[1], out_shardings=shardings)()
    if cfg.init_from:
        params = load_pretrained(cfg.init_from, params, shardings)
    return graphdef, params, rest, shardings


def load_pretrained(directory: str, like: nnx.State, shardings: nnx.State) -> nnx.State:
    """Float32 parameters of a `tnl_jax.convert` output or a Hugging Face directory
    (`config.json`), in `shardings`. The run's `model:` config must describe that model."""
    if not (Path(directory) / "config.json").exists():
        from tnl_jax import convert
        return convert.load_params(directory, like)
    from tnl_jax.generate import load_checkpoint
    loaded = nnx.state(load_checkpoint(directory, dtype=jnp.float32), nnx.Param)
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), nnx.to_pure_dict(tree))
    if shapes(loaded) != shapes(like):
        raise ValueError(f"init_from={directory}: its parameters do not match the model config "
                         "of this run; pass the matching --config / model.* keys")
    nnx.replace_by_pure_dict(like, nnx.to_pure_dict(loaded))
    return jax.device_put(like, shardings)


class StopRequest:
    """Set by SIGTERM: the loop saves a checkpoint at the end of the current step, then exits."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame):
        self.requested = True


def _host_stats(stats: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(stats).items()}


def main(cfg: TrainConfig) -> dict[str, Any]:
    """Trains as `cfg` says; returns the last record (with `eval_loss`) for callers and tests."""
    sharding.maybe_initialize_distributed()
    run_dir = Path(cfg.run_dir)
    is_main = jax.process_index() == 0
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    if cfg.batch_size % (jax.process_count() * cfg.grad_accum):
        raise ValueError(f"batch_size={cfg.batch_size} must divide by processes x grad_accum "
                         f"({jax.process_count()} x {cfg.grad_accum})")

    tokenizer = get_tokenizer(cfg.tokenizer, cfg.model)
    spec = data.DataSpec(source=cfg.data, seq_len=cfg.seq_len,
                         batch_size=cfg.batch_size // jax.process_count(), seed=cfg.seed,
                         tokenizer=tokenizer, eval_fraction=cfg.eval_fraction,
                         shuffle_window=cfg.shuffle_window,
                         process_index=jax.process_index(), process_count=jax.process_count())
    train_iter = data.train_batches(spec)
    eval_spec = dataclasses.replace(spec, source=cfg.eval_data or cfg.data)
    eval_set = data.eval_batches(eval_spec, cfg.eval_batches)

    graphdef, params, rest, params_sharding = initial_params(cfg, mesh)
    tx, schedule = optim.adamw(
        params, nnx.get_partition_spec(params), lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps,
        min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay, beta1=cfg.beta1,
        beta2=cfg.beta2, grad_clip=cfg.grad_clip)
    state_sharding = _state_shardings(tx, params_sharding, params, mesh)
    state = jax.jit(lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.int32(0)},
                    out_shardings=state_sharding)(params)

    checkpoints = RunCheckpoints(run_dir / "checkpoints", cfg.keep_checkpoints)
    restored = checkpoints.restore_latest(state, train_iter)
    start = 0
    if restored:
        start, state = restored
        print(f"resumed from step {start} in {run_dir}")
    log = metrics.MetricsLog(run_dir / "metrics.jsonl", start, writer=is_main)
    config_dict = train_config.to_dict(cfg)

    batch_sharding = sharding.batch_sharding(mesh)
    batch_shardings = {k: batch_sharding for k in data.BATCH_KEYS}
    train_step = jax.jit(make_train_step(graphdef, rest, tx, schedule, cfg.grad_accum),
                         in_shardings=(state_sharding, batch_shardings),
                         out_shardings=(state_sharding, sharding.replicated(mesh)),
                         donate_argnums=0)
    eval_fn = jax.jit(make_eval_step(graphdef, rest),
                      in_shardings=(params_sharding, batch_shardings),
                      out_shardings=sharding.replicated(mesh))

    tokens_per_step = cfg.batch_size * cfg.seq_len
    flops_per_token = count_flops_per_token(cfg.model, cfg.seq_len)
    stop = StopRequest()
    progress = tqdm(total=cfg.steps, initial=start, disable=not is_main, dynamic_ncols=True)
    record: dict[str, Any] = {}
    last_time, last_step = None, start
    try:
        for step in range(start + 1, cfg.steps + 1):
            batch = sharding.global_batch(next(train_iter), mesh)
            state, stats = train_step(state, batch)
            record = {"step": step, **_host_stats(stats)}
            if not math.isfinite(record["loss"]):
                raise NonFiniteLoss(
                    f"non-finite loss ({record['loss']}) at step {step}; stopping. The last good "
                    f"checkpoint (step {checkpoints.latest_step()}) in {run_dir} is kept.")
            now = time.perf_counter()
            if last_time is not None:  # The first step of a process includes compilation.
                rate = (step - last_step) * tokens_per_step / (now - last_time)
                record.update(tokens_per_s=rate,
                              mfu=metrics.mfu(rate, flops_per_token, jax.device_count()))
            last_time, last_step = now, step
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                record.update(evaluate(eval_fn, state["params"], eval_set, mesh))
                last_time = time.perf_counter()  # Evaluation time is not training throughput.
            if step % cfg.log_every == 0 or "eval_loss" in record or step == cfg.steps:
                log.write(record)
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.3f}",
                                 tok_s=f"{record.get('tokens_per_s', 0):.0f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop.requested:
                checkpoints.save(step, state, train_iter, config_dict)
            if stop.requested:
                print(f"SIGTERM: saved step {step} to {run_dir}, exiting")
                return record
    finally:
        progress.close()
        checkpoints.wait()
        checkpoints.close()

    report(cfg, run_dir, graphdef, rest, state["params"], tokenizer, is_main)
    return record


def report(cfg: TrainConfig, run_dir: Path, graphdef, rest, params, tokenizer,
           is_main: bool) -> None:
    """The end of a run: loss plot, peak device memory and a short sample."""
    if not is_main:
        return
    records = metrics.read_metrics(run_dir / "metrics.jsonl")
    evals = [r for r in records if "eval_loss" in r]
    if evals:
        print(f"held-out loss at step {evals[-1]['step']}: {evals[-1]['eval_loss']:.4f} "
              f"nats/token")
    metrics.plot_losses(records, run_dir / "loss.png")
    print(f"loss curve: {run_dir / 'loss.png'}")
    peak = metrics.peak_memory_bytes()
    print(f"peak device memory: {peak / 2**30:.2f} GiB" if peak is not None
          else "peak device memory: not reported by this backend")
    if cfg.sample_tokens > 0 and cfg.data != "mqar":
        print("sample:", sample(cfg, graphdef, rest, params, tokenizer))


def sample(cfg: TrainConfig, graphdef, rest, params, tokenizer) -> str:
    from tnl_jax.generate import generate
    model = nnx.merge(graphdef, params, rest)
    prompt = tokenizer.encode(cfg.sample_prompt)
    new_tokens = generate(model, [prompt], cfg.sample_tokens, temperature=0.8, top_k=40,
                          seed=cfg.seed, eos_id=tokenizer.eos_id)
    return cfg.sample_prompt + tokenizer.decode([int(t) for t in np.asarray(new_tokens)[0]])
