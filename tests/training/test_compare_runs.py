"""benchmarks/training/compare_runs.py: the final loss is the mean of the last steps'
losses, the change is against the reference, and a short run is named."""
import json

import pytest

from benchmarks.training.compare_runs import main, summary


def write_run(path, losses, rate):
    path.mkdir()
    with open(path / "metrics.jsonl", "w") as f:
        for step, loss in enumerate(losses, 1):
            f.write(json.dumps({"step": step, "loss": loss, "tokens_per_s": rate}) + "\n")


def test_final_losses_and_change(tmp_path, rng, monkeypatch, capsys):
    ref, other = rng.uniform(2, 3, 40).tolist(), rng.uniform(2, 3, 40).tolist()
    write_run(tmp_path / "bf16", ref, 100.0)
    write_run(tmp_path / "fp8", other, 150.0)
    assert summary(str(tmp_path / "bf16"), 10)["final_loss"] == pytest.approx(sum(ref[-10:]) / 10)
    monkeypatch.setattr("sys.argv", ["compare_runs", str(tmp_path / "bf16"),
                                     str(tmp_path / "fp8"), "--last", "10", "--out", ""])
    main()
    change = 100 * ((sum(other[-10:]) / 10) / (sum(ref[-10:]) / 10) - 1)
    assert f"final loss {change:+.2f}% against the reference, 1.50x tokens/s" in capsys.readouterr().out


def test_a_run_shorter_than_last_is_named(tmp_path):
    write_run(tmp_path / "short", [2.0, 1.9], 1.0)
    with pytest.raises(ValueError, match="short: 2 logged steps, fewer than --last=50"):
        summary(str(tmp_path / "short"), 50)
