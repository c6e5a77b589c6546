"""The training loop: `main(cfg)` trains, evaluates, checkpoints and reports.

Read top to bottom: lock `run_dir` and check that its checkpoints were written
under this config (before anything compiles); set up the mesh, data, model and
optimizer; restore the newest usable checkpoint of `run_dir` if there is one; then
step, log, evaluate and save until `steps`, stopping before a non-finite state is
saved; finally plot the losses and print a sample.
"""
from __future__ import annotations

import dataclasses
import shutil
import signal
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from tnl_jax import data
from tnl_jax.checkpoints import kinds, loader
from tnl_jax.generation import generate
from tnl_jax.model.counting import count_flops_per_token, count_params
from tnl_jax.model.language_model import create_model
from tnl_jax.tokenizers import TOKENIZER_FILES
from tnl_jax.training import config as train_config
from tnl_jax.training import (divergence, losses, metrics, optim, progress, resume, run_errors,
                              sharding, start, tensorboard)
from tnl_jax.training.config import TrainConfig
from tnl_jax.training.run_checkpoints import (ProcessCountChanged, RunCheckpoints,
                                             UnreadableCheckpoints)
from tnl_jax.training.run_data import data_iterators
from tnl_jax.training.run_lock import RunDirLocked, RunLock
from tnl_jax.training.steps import evaluate, make_eval_step, make_train_step


def _state_shardings(tx, params_sharding, params, mesh):
    """Optimizer moments follow their parameter's sharding; counters are replicated."""
    abstract_opt = jax.eval_shape(tx.init, params)
    opt_sharding = optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt, params_sharding,
        transform_non_params=lambda _: sharding.replicated(mesh))
    return {"params": params_sharding, "opt_state": opt_sharding,
            "step": sharding.replicated(mesh)}


def initial_params(cfg: TrainConfig, mesh) -> tuple[nnx.GraphDef, nnx.State, nnx.State, Any]:
    """The model's graph, its parameters created directly in their shardings (or read
    from `init_from`), its other state (the layers' fixed decays), the shardings."""
    def create():
        return create_model(cfg.model, nnx.Rngs(cfg.seed))

    graphdef, abstract_params, _ = nnx.split(nnx.eval_shape(create), nnx.Param, ...)
    shardings = sharding.param_shardings(abstract_params, mesh)
    params, rest = jax.jit(lambda: nnx.split(create(), nnx.Param, ...)[1:],
                           out_shardings=(shardings, None))()
    if cfg.init_from:
        params = loader.load_params(cfg.init_from, params)
    return graphdef, params, rest, shardings



# How a run stops on purpose, each with a message that says what happened and what to
# do: the command line prints the message alone (tnl_jax/cli/train.py), not a traceback.
RUN_STOPS = (divergence.NonFiniteStep, resume.RunConfigChanged, RunDirLocked,
             UnreadableCheckpoints, ProcessCountChanged, kinds.WrongDirectoryKind,
             run_errors.StorageError)
# A user's error: the command line prints the message alone, exit status 2.
USER_ERRORS = (run_errors.StartError, run_errors.DataReadError)


class StopRequest:
    """Set by SIGTERM: the loop saves a checkpoint at the end of the current step, then exits."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame):
        self.requested = True


def _host_stats(stats: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(stats).items()}


def keep_tokenizer(cfg: TrainConfig, run_dir: Path, copy: bool = True) -> None:
    """Copies a tokenizer file into `run_dir` as ``tokenizer.model`` or ``tokenizer.json``
    (by its suffix), so that the run directory is all that generation needs
    (`tnl_jax.checkpoints.loader.tokenizer_spec`). A copy already there must be the same
    file: another tokenizer is another model. A tokenizer file gone since the run began
    is read from the copy (``start.tokenizer_source``). ``copy=False``: only checks."""
    source = start.tokenizer_file(cfg.tokenizer, str(run_dir))
    name = source and next((n for n in TOKENIZER_FILES if Path(n).suffix == source.suffix),
                           None)
    if not name:
        return
    kept = run_dir / name
    if not kept.exists():
        if not copy:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, kept)
    elif kept.read_bytes() != source.read_bytes():
        raise resume.RunConfigChanged(
            f"tokenizer={cfg.tokenizer!r}: {source} is not the tokenizer this run trained "
            f"with (its copy {kept} differs); nothing in {run_dir} was changed. Use that copy "
            f"as tokenizer=, or choose a new run_dir.")


def under_mesh(fn, mesh):
    """``fn`` called under ``jax.set_mesh(mesh)``: the model sees the mesh while it is
    traced, to constrain its activations and split the attention op (its rules in
    ``tnl_jax.partitioning``)."""
    def call(*args, **kwargs):
        with jax.set_mesh(mesh):
            return fn(*args, **kwargs)
    return call


class Trainer:
    """The compiled state of one run: model graph, optimizer, shardings, step functions
    (which run under the mesh)."""

    def __init__(self, cfg: TrainConfig, mesh):
        self.mesh = mesh
        self.graphdef, params, self.rest, self.params_sharding = initial_params(cfg, mesh)
        self.tx, self.schedule = optim.adamw(
            params, nnx.get_partition_spec(params), lr=cfg.lr, warmup=cfg.warmup,
            steps=cfg.steps, min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay,
            beta1=cfg.beta1, beta2=cfg.beta2, grad_clip=cfg.grad_clip)
        self.state_sharding = _state_shardings(self.tx, self.params_sharding, params, mesh)
        self.initial_state = jax.jit(
            lambda p: {"params": p, "opt_state": self.tx.init(p), "step": jnp.int32(0)},
            out_shardings=self.state_sharding)(params)
        batch_shardings = {k: sharding.batch_sharding(mesh) for k in data.BATCH_KEYS}
        self.jitted_train_step = jax.jit(  # Lower it under the mesh (benchmarks do).
            make_train_step(self.graphdef, self.rest, self.tx, self.schedule, cfg.grad_accum,
                            cfg.loss_chunk_tokens, cfg.loss_kernel, cfg.grad_reduce_dtype),
            in_shardings=(self.state_sharding, batch_shardings),
            out_shardings=(self.state_sharding, sharding.replicated(mesh)), donate_argnums=0)
        self.train_step = under_mesh(self.jitted_train_step, mesh)
        self.eval_step = under_mesh(jax.jit(make_eval_step(self.graphdef, self.rest,
                                                           cfg.loss_chunk_tokens, cfg.loss_kernel),
                                            in_shardings=(self.params_sharding, batch_shardings),
                                            out_shardings=sharding.replicated(mesh)), mesh)


def describe(cfg: TrainConfig, mesh) -> str:
    """What a run is about to do, printed before anything compiles."""
    device = jax.devices()[0]
    peak = metrics.peak_flops_per_device(device)
    flops = count_flops_per_token(cfg.model, cfg.seq_len)
    return "\n".join([
        f"model: {count_params(cfg.model) / 1e6:.1f}M parameters, {cfg.model.decoder_layers} "
        f"layers of width {cfg.model.decoder_embed_dim}, {flops / 1e9:.2f} GFLOP per token "
        f"trained, compute {cfg.model.dtype}",
        f"devices: {jax.device_count()} x {device.device_kind} in {jax.process_count()} "
        f"process(es); mesh {dict(mesh.shape)}; "
        + (f"MFU against {peak / 1e12:.0f} TFLOP/s bf16 per device" if peak else
           f"no MFU (no known peak for a {device.platform} device)"),
        f"steps: {cfg.steps} of {cfg.batch_size} rows x {cfg.seq_len} tokens = "
        f"{cfg.batch_size * cfg.seq_len:,} tokens (grad_accum {cfg.grad_accum}); loss "
        f"{losses.resolve_kernel(cfg.loss_kernel)} "
        f"(loss_kernel={cfg.loss_kernel})",
        f"data: {cfg.data} (tokenizer {cfg.tokenizer}, vocabulary {cfg.model.vocab_size}); "
        f"held out: {cfg.eval_batches} batch(es) of {cfg.eval_data or cfg.data}"
        if cfg.eval_every else "held out: none (eval_every=0)",
        metrics_line(cfg)])


def metrics_line(cfg: TrainConfig) -> str:
    """Where the run's metrics go, and how to get TensorBoard's when they do not."""
    run_dir = Path(cfg.run_dir)
    if tensorboard.writes(cfg.tensorboard):
        events = f"TensorBoard events in {run_dir / tensorboard.DIRECTORY}"
    elif cfg.tensorboard is False:
        events = "no TensorBoard events (tensorboard=false)"
    else:
        events = (f"no TensorBoard events ({tensorboard.PACKAGE} is not installed: "
                  f"{tensorboard.INSTALL})")
    return f"metrics: {run_dir / 'metrics.jsonl'} every {cfg.log_every} step(s); {events}"


def main(cfg: TrainConfig) -> dict[str, Any]:
    """Trains as `cfg` says; returns the last record (with `eval_loss`) for callers and tests.

    Everything that can be checked is checked before anything is created or compiled
    (``prepare``); a start that fails later removes the folders it created."""
    train_config.check(cfg)
    sharding.maybe_initialize_distributed()
    is_main = jax.process_index() == 0
    with run_errors.as_start_errors(RUN_STOPS):
        prepared = prepare(cfg)
    new_folder = start.first_new_folder(cfg.run_dir)
    # The run_dir is this trainer's alone, and its checkpoints were saved under a config
    # this one may continue.
    with RunLock(cfg.run_dir, hold=is_main), \
            start.removed_on_failure(new_folder, enabled=is_main) as started:
        announced = resume.check_run_dir(cfg.run_dir, prepared.config_dict)
        if announced and announced[1] and is_main:
            print(f"resuming with changed settings: {'; '.join(announced[1])}", flush=True)
        return _train(cfg, prepared, announced[0] if announced else None, started)


@dataclasses.dataclass
class Prepared:
    """What a run sets up before it creates or compiles anything."""
    mesh: Any
    tokenizer: Any
    train_iter: Any
    eval_set: list[dict]
    config_dict: dict[str, Any]  # What its checkpoints save of the config (resume.run_config).


def prepare(cfg: TrainConfig) -> Prepared:
    """The checks that need more than the config (the run directory, the devices, the
    tokenizer, the data, the dtype) and the data iterators; creates nothing."""
    kinds.refuse_as_run_dir(cfg.run_dir)  # Not a converted or Hugging Face checkpoint.
    start.check_run_dir(cfg.run_dir)
    start.check_dtype(cfg)
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.context, cfg.mesh.tensor)
    sharding.check_batch(cfg.batch_size, cfg.seq_len, cfg.grad_accum, mesh)
    losses.check_setting(cfg.loss_chunk_tokens)
    tokenizer = start.open_tokenizer(cfg)
    keep_tokenizer(cfg, Path(cfg.run_dir), copy=False)
    train_iter, eval_set = data_iterators(cfg, tokenizer, mesh)
    return Prepared(mesh, tokenizer, train_iter, eval_set, resume.run_config(cfg))


def _train(cfg: TrainConfig, prepared: Prepared, announced_step: int | None,
           started: start.Started) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    is_main = jax.process_index() == 0
    with run_errors.as_start_errors(RUN_STOPS):
        if is_main:
            print(describe(cfg, prepared.mesh), flush=True)
        trainer = Trainer(cfg, prepared.mesh)
    checkpoints = RunCheckpoints(run_dir, cfg.keep_checkpoints)
    try:
        with run_errors.writing_run_dir(cfg.run_dir):
            begin, state = resume.restore(checkpoints, cfg.run_dir, trainer.initial_state,
                                          prepared.train_iter, prepared.config_dict,
                                          announced_step)
            started.done()
            if begin >= cfg.steps:  # Nothing to train: say so, rather than exit in silence.
                if is_main:
                    print(already_finished(run_dir, begin, cfg.steps), flush=True)
                return last_record(run_dir, begin)
            if begin:
                print(f"resumed from step {begin} in {run_dir}")
            if is_main:
                keep_tokenizer(cfg, run_dir)
            log = metrics.MetricsLog(run_dir / "metrics.jsonl", writer=is_main,
                                     events=tensorboard.open_event_log(cfg.tensorboard, run_dir,
                                                                       begin, is_main))
            try:
                state, record = train_loop(cfg, trainer, state, begin, prepared, checkpoints,
                                           log)
            finally:
                log.close()
    finally:
        with run_errors.writing_run_dir(cfg.run_dir):
            checkpoints.wait()
            checkpoints.close()
    if record.get("step") == cfg.steps:
        report(cfg, run_dir, trainer, state["params"], prepared.tokenizer, is_main)
    return record


def train_loop(cfg: TrainConfig, trainer: Trainer, state, start: int, prepared: Prepared,
               checkpoints: RunCheckpoints, log: metrics.MetricsLog):
    """Steps from `start` to `cfg.steps` (or to a SIGTERM): log, evaluate, save.
    Returns the state and the last record.

    The host never waits for the step it just launched: a step's metrics are read
    after the next step is queued (and its batch prepared), so the device always has
    work. Only a step that is evaluated, saved or last is read at once, so that no
    checkpoint is written before its loss, gradient norm and new state are known to
    be finite (``divergence.check_step``).
    """
    train_iter, eval_set = prepared.train_iter, prepared.eval_set
    throughput = metrics.Throughput(cfg.batch_size * cfg.seq_len,
                                    count_flops_per_token(cfg.model, cfg.seq_len))
    stop = StopRequest()
    shown = progress.Progress(cfg.steps, start, cfg.log_every,
                              enabled=jax.process_index() == 0)
    record: dict[str, Any] = {}
    pending = None  # (step, its metrics on the device), not read yet
    last_finite = start or None  # The newest checkpoint known to be finite.

    def read(step: int, stats, write: bool = True) -> dict[str, Any]:
        record = divergence.check_step(
            {"step": step, **_host_stats(stats), **throughput.update(step)}, step,
            last_finite, str(checkpoints.manager.directory))
        if write and (step % cfg.log_every == 0 or step == cfg.steps):
            log.write(record)
        shown.update(step, record, throughput.seconds_per_step())
        return record

    try:
        for step in range(start + 1, cfg.steps + 1):
            with run_errors.reading_data(cfg.data, step, last_finite):
                rows = next(train_iter)
            batch = sharding.global_batch(rows, trainer.mesh)
            state, stats = trainer.train_step(state, batch)
            if pending is not None:
                record = read(*pending)
            pending = (step, stats)
            evaluate_now = cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps)
            save_now = step % cfg.checkpoint_every == 0 or step == cfg.steps or stop.requested
            if not (evaluate_now or save_now):
                continue
            record, pending = read(*pending, write=not evaluate_now), None
            if evaluate_now:
                record.update(evaluate(trainer.eval_step, state["params"], eval_set,
                                       trainer.mesh))
                log.write(record)
            if save_now:
                checkpoints.save(step, state, train_iter, prepared.config_dict)
                last_finite = step
            throughput.pause()  # Evaluation and saving are not training throughput.
            if stop.requested:
                print(f"SIGTERM: saved step {step} to {cfg.run_dir}, exiting")
                break
    finally:
        shown.close()
    return state, record


def already_finished(run_dir: Path, step: int, steps: int) -> str:
    """The one line of a rerun with nothing left to train."""
    if step == steps:
        return (f"run_dir {run_dir} already finished at step {step} of {steps}; raise "
                f"steps= to train further")
    return (f"run_dir {run_dir} is already at step {step}, past steps={steps}; raise steps= "
            f"above {step} to train further")


def last_record(run_dir: Path, step: int) -> dict[str, Any]:
    """The metrics record of ``step`` in ``run_dir`` (``{"step": step}`` if none)."""
    logged = [r for r in metrics.read_metrics(run_dir / "metrics.jsonl") if r["step"] == step]
    return logged[-1] if logged else {"step": step}


def report(cfg: TrainConfig, run_dir: Path, trainer: Trainer, params, tokenizer,
           is_main: bool) -> None:
    """The end of a run: loss plot, peak device memory and a short sample (computed by
    every process: the weights are split over all of them)."""
    text = None
    if cfg.sample_tokens > 0 and cfg.data != "mqar":
        text = sample(cfg, trainer, params, tokenizer)
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
    if text is not None:
        print("sample:", text)


def sample(cfg: TrainConfig, trainer: Trainer, params, tokenizer) -> str:
    """A continuation of ``cfg.sample_prompt``, generated under the run's mesh."""
    model = nnx.merge(trainer.graphdef, params, trainer.rest)
    prompt = tokenizer.encode(cfg.sample_prompt)
    new_tokens = under_mesh(generate, trainer.mesh)(
        model, [prompt], cfg.sample_tokens, temperature=0.8, top_k=40, seed=cfg.seed,
        eos_id=tokenizer.eos_id)
    new_tokens = multihost_utils.process_allgather(new_tokens, tiled=True)
    return cfg.sample_prompt + tokenizer.decode([int(t) for t in np.asarray(new_tokens)[0]])
