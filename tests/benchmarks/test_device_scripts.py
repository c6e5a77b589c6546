"""The device scripts' checks run on the CPU before a device call spends its minutes:
glue_check's model switches (equal in float32), its norm kernels' checks (interpreted),
its ``--only``, and context_proxy's cases (equal to the plain op), at tiny shapes on
the ``xla`` backend; the shell scripts refuse a bad switch before setting anything up."""
import argparse
import os
import pathlib
import subprocess

import numpy as np
import pytest

from benchmarks.scaling import context_proxy
from benchmarks.training import glue_check


def test_glue_check_model_switches_are_equal_in_float32(monkeypatch):
    # norm_kernel=pallas interpreted on the CPU is slow, and tests/model/test_norm_kernel.py
    # checks the same equality: here only that glue_check runs it on the GPU.
    labels = [label for label, _ in glue_check.MODEL_SWITCHES]
    assert labels == ["remat projections_op_out vs projections", "scan_unroll all vs 1",
                      "norm_kernel pallas vs xla"]
    monkeypatch.setattr(glue_check, "MODEL_SWITCHES", glue_check.MODEL_SWITCHES[:2])
    rows = glue_check.check_model_switches(np.random.default_rng(0), seq=128, width=64,
                                           layers=2, backend="xla", timed=False)
    assert [r["check"].split(" (")[0] for r in rows] == labels[:2]
    for r in rows:
        assert r["err"] <= r["tol"] == 1e-4, r
        assert r["base_ms"] is None and r["new_ms"] is None  # Only the equality asked.


def test_glue_check_norm_kernels_match_the_reference():
    rows = glue_check.check_norm_kernels(np.random.default_rng(0), "interpret",
                                         glue_check.NORM_SHAPES_INTERPRETED[-1:], timed=False)
    assert [r["check"] for r in rows] == [
        f"{op} 37x64 {dtype} vs reference" for op in ("norm", "norm-gate")
        for dtype in ("float32", "bfloat16")]
    assert all(r["err"] <= r["tol"] for r in rows), rows


def test_context_proxy_cases_equal_the_plain_op():
    args = argparse.Namespace(seq=256, heads=2, dim=64, rounds=1, backend="xla",
                              profile=False)
    rows = context_proxy.proxy_rows(args)
    assert [r["case"] for r in rows] == ["plain", "lasp2", "old", "state-only pass",
                                         "dS-only pass"]
    assert all(r["rel_err_vs_plain"] <= 1e-5 for r in rows[:3])
    assert all(r["fwd_bwd_ms"] > 0 and r["kernel_ms"] is None for r in rows)
    assert "| lasp2 |" in context_proxy.proxy_table(rows, args)


def test_glue_check_only_runs_the_named_part_and_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.setattr(glue_check, "NORM_SHAPES_INTERPRETED",
                        glue_check.NORM_SHAPES_INTERPRETED[-1:])
    monkeypatch.setattr("sys.argv", ["glue_check", "--interpret", "--only", "norm_kernel",
                                     "--out", str(tmp_path)])
    glue_check.main()
    table = (tmp_path / "glue_check.md").read_text()
    assert "norm-gate 37x64 bfloat16 vs reference" in table
    assert "fused" not in table and "remat" not in table  # The other parts did not run.


def test_glue_check_only_names_the_parts_it_knows(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["glue_check", "--only", "norm"])
    with pytest.raises(SystemExit):
        glue_check.main()
    assert "--only 'norm': expected comma-separated parts of loss_kernel, norm_kernel" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("script, env, says", [
    ("step_variants.sh", {"VARIANTS": "norms"},
     "VARIANTS=norms: expected norm or xla_flags"),
    ("step_variants.sh", {"VARIANTS": "norm", "ROUNDS": "two"},
     "ROUNDS=two: expected 1, 2 or 3"),
    ("step_variants.sh", {"VARIANTS": "norm", "PRESET": "tnl-7b"},
     "PRESET=tnl-7b: expected tnl-385m or tnl-1b"),
    ("peers_and_profile.sh", {"PEERS_1B": "yes"}, "PEERS_1B=yes: expected 0 or 1"),
    ("fp8_check.sh", {"PART": "both"}, "PART=both: expected loss or speed"),
])
def test_device_scripts_refuse_a_bad_switch_before_the_device_is_set_up(script, env, says):
    root = pathlib.Path(__file__).parents[2]
    result = subprocess.run(["bash", f"benchmarks/training/{script}"], capture_output=True,
                            text=True, env={**os.environ, **env}, cwd=root, timeout=60)
    assert result.returncode == 2 and says in result.stderr, result
    assert result.stdout == ""  # Nothing installed, nothing run.
