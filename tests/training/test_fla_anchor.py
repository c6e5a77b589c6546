"""train_bench --anchor fla without torch: FLA's configs at our presets' shapes have our
models' matrix products, and its rows' MFU uses our FLOP count of the matching
architecture (checked against a hand count)."""
import importlib.util
import json
import math
from types import SimpleNamespace

import jax
import pytest
from flax import nnx

from benchmarks.training import fla_rows
from benchmarks.training.fla_rows import (anchor_commands, flops_per_token, peer_table, shape_of,
                                          with_mfu, write_peer_table)
from benchmarks.training.fla_shapes import FLOP_ARCH, Shape, fla_config, matrix_params
from tnl_jax.model import create_model
from tnl_jax.training import config as train_config


def our_matrix_params(preset: str, arch: str) -> int:
    """Our model's weights but LRPE's per-head angles (no matrix product), from shapes."""
    cfg = train_config.load(preset, [f"model.architecture={arch}"]).model
    model = nnx.eval_shape(lambda: create_model(cfg, nnx.Rngs(0)))
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    assert any("lrpe" in jax.tree_util.keystr(path) for path, _ in leaves) == (arch == "tnl")
    return sum(math.prod(p.shape) for path, p in leaves
               if "lrpe" not in jax.tree_util.keystr(path))


@pytest.mark.parametrize("preset", ["tnl-385m", "tnl-1b"])
@pytest.mark.parametrize("model", ["retnet", "transformer"])
def test_fla_config_has_our_matrix_products(preset, model):
    shape = shape_of(train_config.load(preset, []).model)
    config = fla_config(model, shape, rows=8192)
    assert matrix_params(model, config) == our_matrix_params(preset, FLOP_ARCH[model])
    assert config["max_position_embeddings"] == 8192 and config["tie_word_embeddings"]
    assert config["fuse_linear_cross_entropy"] and not config["fuse_cross_entropy"]


def test_fla_config_names_a_bad_model_or_loss():
    shape = Shape(hidden=64, layers=2, heads=4, mlp=96, vocab=100)
    with pytest.raises(ValueError, match="model='mamba'"):
        fla_config("mamba", shape, 128)
    with pytest.raises(ValueError, match="loss='chunked'"):
        fla_config("retnet", shape, 128, loss="chunked")
    with pytest.raises(ValueError, match="hidden=64 is not divisible by heads=5"):
        fla_config("retnet", Shape(64, 2, 5, 96, 100), 128)


@pytest.mark.parametrize("rows", [2048, 32768])
def test_transformer_rows_count_softmax_flops_by_hand(rows):
    cfg = train_config.load("tnl-1b", []).model
    d, m, layers, vocab = 2048, cfg.mlp_dim, cfg.decoder_layers, cfg.vocab_size
    by_hand = 3 * (2 * d * vocab + layers * (2 * 3 * d * m + 2 * 4 * d * d + 2 * d * rows))
    assert flops_per_token("tnl-1b", "transformer", rows) == by_hand


def test_anchor_mfu_uses_the_peak_of_the_device_the_row_names():
    """On this CPU too: a saved H100 row's MFU is its FLOP/s over the H100's 989 TFLOP/s;
    a device without a peak in the table gives none."""
    row = {"model": "retnet", "rows": 2048, "tokens": 32768, "tokens_per_s": 1e5,
           "device": "NVIDIA H100 80GB HBM3"}
    flops = flops_per_token("tnl-385m", "retnet", 2048)
    assert with_mfu(row, "tnl-385m")["mfu"] == pytest.approx(1e5 * flops / 989e12)
    assert with_mfu({**row, "device": "cpu"}, "tnl-385m")["mfu"] is None


def test_anchor_commands_follow_the_settings():
    setting = lambda arch, rows: SimpleNamespace(preset="tnl-385m", arch=arch, rows=rows,
                                                 tokens=32768, remat="projections")
    settings = [setting("tnl", 2048), setting("softmax", 2048), setting("tnl", 8192),
                setting("hybrid", 8192)]
    (key, command), = anchor_commands(settings, warmup=2, steps=5).items()
    assert key == ("tnl-385m", 32768)
    text = " ".join(command)
    assert "-m benchmarks.training.fla_anchor_torch" in text
    assert ("--hidden=1024 --layers=24 --heads=8 --mlp=2816 --vocab=64000 --models retnet "
            "transformer --rows 2048 8192 --tokens 32768 --warmup 2 --steps 5") in text


def test_peer_table_gives_ours_over_fla_at_equal_shape():
    ours = [{"preset": "p", "arch": "tnl", "remat": "projections", "rows": 8192, "tokens": 32768,
             "tokens_per_s": 150e3, "mfu": 0.4, "program_gib": 20.0},
            {"preset": "p", "arch": "softmax", "remat": "projections", "rows": 8192,
             "tokens": 32768, "tokens_per_s": 90e3, "mfu": 0.3, "program_gib": 22.0}]
    fla = [{"preset": "p", "model": "retnet", "rows": 8192, "tokens": 32768, "batch": 4,
            "tokens_per_s": 60e3, "mfu": 0.16, "peak_gib": 30.0},
           {"preset": "p", "model": "transformer", "rows": 8192, "tokens": 32768, "batch": 4,
            "error": "out of memory (x)"}]
    lines = peer_table(ours, fla).splitlines()
    assert lines[2].endswith("| retnet | 60.0K | 16.0% | 30.0 | 2.50 |")
    assert "out of memory" in lines[3] and lines[3].endswith("| - |")


def test_peer_table_is_written_with_what_each_anchor_ran_with(tmp_path):
    ours = [{"preset": "p", "arch": "tnl", "remat": "projections", "rows": 2048, "tokens": 4096,
             "tokens_per_s": 3e3, "mfu": None, "program_gib": 1.0}]
    fla = [{"preset": "p", "model": "retnet", "rows": 2048, "tokens": 4096, "batch": 2,
            "tokens_per_s": 2e3, "mfu": None, "peak_gib": 2.0,
            "ran_with": {"compile": "off: RuntimeError: x", "fla_config": {"hidden_size": 8}}}]
    write_peer_table(ours, fla, str(tmp_path))
    text = (tmp_path / "train_bench_fla.md").read_text()
    assert "| 1.50 |" in text and "- fla retnet 2 x 2048: compile off: RuntimeError: x" in text
    assert "hidden_size" not in text and "hidden_size" in (tmp_path / "train_bench_fla.json").read_text()


def test_anchor_asked_for_and_not_importable_is_an_error(monkeypatch):
    """A peer table without its peer is not a result: the run stops, naming what is
    missing and where the wheels come from."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fla" else real_find_spec(name, *a))
    with pytest.raises(SystemExit, match="--anchor fla: .*fla not importable.*device_setup.sh"):
        fla_rows.anchor_rows([], warmup=1, steps=1)


def test_saved_rows_make_the_peer_table_again(tmp_path, monkeypatch):
    """A run cut after FLA's rows (saved at once) and ours from another process: the
    peer table is made from the two files, ratios included."""
    from benchmarks.training import train_bench
    ours = [{"setting": "s", "preset": "p", "arch": "tnl", "remat": "projections",
             "rows": 2048, "tokens": 4096, "tokens_per_s": 3e3, "mfu": None,
             "gflop_per_token": 1.0, "program_gib": 1.0, "params_m": 1.0, "step_s": 1.0,
             "device": "cpu"}]
    fla = [{"preset": "p", "model": "retnet", "rows": 2048, "tokens": 4096, "batch": 2,
            "tokens_per_s": 2e3, "mfu": None, "peak_gib": 2.0, "ran_with": {}}]
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    fla_rows.write_anchor_rows(fla, str(tmp_path))
    monkeypatch.setattr("sys.argv", ["train_bench", "--from-json", str(tmp_path / "ours.json"),
                                     "--anchor-json", str(tmp_path / "train_bench_fla.json"),
                                     "--out", str(tmp_path / "table")])
    train_bench.main()
    assert "| 1.50 |" in (tmp_path / "table" / "train_bench_fla.md").read_text()


def test_anchor_json_alone_is_an_error(monkeypatch, capsys):
    from benchmarks.training import train_bench
    monkeypatch.setattr("sys.argv", ["train_bench", "--anchor-json", "fla.json"])
    with pytest.raises(SystemExit):
        train_bench.main()
    assert "--anchor-json fla.json: only with --from-json" in capsys.readouterr().err


def test_a_missing_saved_file_is_named(tmp_path, monkeypatch, capsys):
    from benchmarks.training import train_bench
    (tmp_path / "ours.json").write_text("[]")
    monkeypatch.setattr("sys.argv", ["train_bench", "--from-json", str(tmp_path / "ours.json"),
                                     "--anchor-json", str(tmp_path / "fla.json")])
    with pytest.raises(SystemExit):
        train_bench.main()
    assert f"--anchor-json {tmp_path / 'fla.json'}: no such file" in capsys.readouterr().err
