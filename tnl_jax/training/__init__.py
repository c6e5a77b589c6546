"""Training: the run config, the loop, and what the loop needs.

    config.py           TrainConfig: presets, typed `key=value` overrides
    loop.py             main(cfg): set up, step, evaluate, save, report
    steps.py            the jitted train step (gradient accumulation) and eval step
    losses.py           cross entropy a chunk of tokens at a time (the logits never whole)
    optim.py            AdamW, schedule, weight-decay mask
    sharding.py         the device mesh, parameter and batch placement, multi-process
                        start (the logical-axis rules: tnl_jax/partitioning.py)
    metrics.py          metrics.jsonl, MFU, peak memory, loss plot
    run_checkpoints.py  Orbax checkpoints of a run (state, data position, config)
    resume.py           resuming only under the checkpoint's config, from a finite state
    divergence.py       no non-finite number reaches a checkpoint
    run_lock.py         one trainer per run directory
    start.py            checks before a run creates anything: run_dir, tokenizer, dtype
    run_errors.py       the one-line errors of a start, a data read, a full disk
"""
