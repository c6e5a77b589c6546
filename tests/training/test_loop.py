"""The training loop: metrics and report, gradient accumulation, decay mask, schedule, data paths."""
import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx

from tests.training.runs import TINY_RUN, losses, tiny_config
from tnl_jax.model import create_model
from tnl_jax.training import loop, optim, start


def test_run_logs_metrics_plot_and_sample(tiny_run):
    records = [json.loads(l) for l in (tiny_run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 5))
    for r in records[1:]:
        assert {"loss", "grad_norm", "lr", "tokens_per_s"} <= set(r)
        assert r["tokens_per_s"] > 0 and np.isfinite(r["grad_norm"])
        assert "mfu" not in r  # a CPU has no peak to quote MFU against
    assert "eval_loss" in records[1] and "eval_loss" in records[3]
    assert records[-1]["loss"] < records[0]["loss"] and tiny_run.record["step"] == 4
    assert (tiny_run.dir / "loss.png").stat().st_size > 1000
    assert "sample: def " in tiny_run.output and "held-out loss at step 4" in tiny_run.output
    assert "peak device memory" in tiny_run.output


def test_gradient_accumulation_matches_one_batch(tmp_path, tiny_run):
    loop.main(tiny_config(tmp_path, *TINY_RUN, "grad_accum=2", "sample_tokens=0"))
    one_batch, accumulated = losses(tiny_run.dir), losses(tmp_path)
    assert sorted(one_batch) == sorted(accumulated) == [1, 2, 3, 4]
    np.testing.assert_allclose([accumulated[s] for s in one_batch], list(one_batch.values()),
                               rtol=1e-5)


def test_weight_decay_only_on_projection_matrices():
    cfg = tiny_config("unused").model
    params = nnx.state(create_model(cfg, nnx.Rngs(0)), nnx.Param)
    tx, _ = optim.adamw(params, nnx.get_partition_spec(params), lr=1e-3, warmup=1, steps=10,
                        min_lr_ratio=0.1, weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=1.0)
    masks = jax.tree_util.tree_map_with_path(
        lambda path, leaf, axes: (jax.tree_util.keystr(path), optim.decays(path, leaf, axes)),
        params, nnx.get_partition_spec(params))
    decided = dict(jax.tree.leaves(masks, is_leaf=lambda x: isinstance(x, tuple)))
    assert not any(v for k, v in decided.items() if "embed_tokens" in k or "theta" in k)
    assert any(v for k, v in decided.items() if "qkvu" in k)
    assert not any("decay" in k for k in decided)  # Fixed decays are no parameters.
    assert sum(decided.values()) >= 4
    assert tx.init(params) is not None


def test_learning_rate_warms_up_then_decays():
    schedule = optim.learning_rate(1e-3, warmup=10, steps=100, min_lr_ratio=0.1)
    assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(100)) == pytest.approx(1e-4)


@pytest.mark.parametrize("source", ["mqar", "npy"])
def test_other_data_sources_train(tmp_path, source):
    if source == "npy":
        rng = np.random.default_rng(0)
        stream = rng.integers(0, 256, 5000).astype(np.int32)
        stream[rng.integers(0, 5000, 40)] = 258  # EOS of the byte tokenizer.
        np.save(tmp_path / "shard0.npy", stream)
        source = str(tmp_path / "*.npy")
    # The shared run's steps and evaluation: its compiled steps serve here too.
    record = loop.main(tiny_config(tmp_path / "run", *TINY_RUN, f"data={source}",
                                   "sample_tokens=0", "checkpoint_every=100"))
    assert np.isfinite(record["loss"]) and np.isfinite(record["eval_loss"])


@pytest.mark.parametrize("name", ["tokenizer.model", "tokenizer.json"])
def test_the_run_keeps_a_copy_of_its_tokenizer(tmp_path, name):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / name).write_text("a tokenizer file")
    cfg = dataclasses.replace(tiny_config(tmp_path / "run"), tokenizer=str(tmp_path / "tok"))
    loop.keep_tokenizer(cfg, tmp_path / "run")
    assert (tmp_path / "run" / name).read_text() == "a tokenizer file"
    (tmp_path / "tok" / name).unlink()  # Gone between runs: the run reads its copy.
    assert start.tokenizer_source(cfg.tokenizer, cfg.run_dir) == str(tmp_path / "run" / name)
    loop.keep_tokenizer(cfg, tmp_path / "run")  # The copy is the tokenizer: no refusal.
    loop.keep_tokenizer(tiny_config(tmp_path / "bytes"), tmp_path / "bytes")
    assert not (tmp_path / "bytes").exists()
