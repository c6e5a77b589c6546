"""window_eval: a run's held-out bits/byte at several row lengths, over the same targets."""
import json

import pytest

from benchmarks.quality import window_eval
from tnl_jax.checkpoints import run_dir as run_layout


def test_windows_score_the_same_targets_with_more_context(tiny_run, tmp_path, capsys):
    out = tmp_path / "windows.json"
    window_eval.main([str(tiny_run.dir), "--windows", "64,256", "--min-bytes", "0",
                      "--max-docs", "2", "--out", str(out)])
    rows = json.loads(out.read_text())
    assert [r["window"] for r in rows] == [64, 256]
    assert rows[0]["tokens"] == rows[1]["tokens"] > 0  # Every target once per window.
    assert all(0 < r["bits_per_byte"] < 16 for r in rows)
    printed = capsys.readouterr().out
    change = rows[1]["bits_per_byte"] / rows[0]["bits_per_byte"] - 1
    assert f"| 256 | {rows[1]['bits_per_byte']:.4f} | {change:+.2%} |" in printed


def test_set_changes_the_config_not_the_weights(tiny_run):
    """``--set`` reaches the model built for the evaluation: the op's kernels
    (interpreted) in place of XLA's score the same; a key the run's architecture
    refuses is refused by name."""
    args = (tiny_run.dir, [64], 0, 1)
    plain, = window_eval.evaluate(*args)
    kernels, = window_eval.evaluate(*args, ["model.attention_backend=interpret"])
    assert kernels["tokens"] == plain["tokens"]
    assert kernels["bits_per_byte"] == pytest.approx(plain["bits_per_byte"], rel=1e-4)
    with pytest.raises(ValueError, match="softmax_logn_length=64.*no softmax layers"):
        window_eval.evaluate(*args, ["model.softmax_logn_length=64"])


def test_a_config_saved_with_retired_keys_is_read(tiny_run, monkeypatch):
    saved = run_layout.read_config(tiny_run.dir)
    older = {**saved, "model": {**saved["model"], "layer_loop": "python"}}
    monkeypatch.setattr(run_layout, "read_config", lambda directory, step=None: older)
    cfg = window_eval.saved_train_config(tiny_run.dir)
    assert cfg.model.to_dict() == saved["model"] and cfg.run_dir == str(tiny_run.dir)


@pytest.mark.parametrize("text", ["", "256,0", "a,b"])
def test_bad_windows_are_refused_naming_the_value(text, capsys):
    with pytest.raises(SystemExit):
        window_eval.main(["somewhere", "--windows", text])
    assert f"--windows {text!r}: expected comma-separated positive token counts" in (
        capsys.readouterr().err)
