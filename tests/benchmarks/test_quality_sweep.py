"""The quality study's choice of learning rate: the lowest validation bits per byte,
never at the edge of the rates tried (the grid extends), failed runs never kept."""
import dataclasses
import json
import math

import numpy as np
import pytest

from benchmarks.quality import quality_report, quality_runs
from benchmarks.quality.quality_runs import Run, Scale
from tnl_jax.evaluation import documents, passkey

KEYS = [k for k in (f"f{i}.py:0" for i in range(40)) if documents.is_validation(k)][:3]


def write_sweep(root, arch, lr, bits_per_byte, rows=2048):
    """A sweep run's quality.json whose validation documents score ``bits_per_byte``."""
    count = np.full((len(KEYS), 5), 100.0)
    loss = count * bits_per_byte * math.log(2)
    scores = documents.WindowScores(rows, KEYS, loss, count)
    result = {"phase": "sweep", "arch": arch, "lr": lr, "seed": 0, "seq_len": rows,
              "windows": [scores.to_dict()]}
    run_dir = root / Run("sweep", arch, lr).name
    run_dir.mkdir()
    (run_dir / "quality.json").write_text(json.dumps(result))


def test_the_kept_rate_is_inside_the_rates_tried(tmp_path):
    scale = Scale(archs=("tnl", "llama"), lrs=(1e-3, 2e-3, 4e-3))
    for lr, bpb in [(1e-3, 1.7), (2e-3, 1.6), (4e-3, 1.65)]:
        write_sweep(tmp_path, "tnl", lr, bpb)
    for lr, bpb in [(1e-3, 1.9), (2e-3, 1.85)]:
        write_sweep(tmp_path, "llama", lr, bpb)
    assert quality_report.sweep_choice(scale, tmp_path, "tnl") == (2e-3, None)
    assert quality_report.sweep_choice(scale, tmp_path, "llama") == (None, 4e-3)  # Grid first.
    write_sweep(tmp_path, "llama", 4e-3, 1.80)  # Best at the top edge: try 8e-3.
    assert quality_report.sweep_choice(scale, tmp_path, "llama") == (None, 8e-3)
    assert quality_report.chosen_lrs(scale, tmp_path) == {"tnl": 2e-3}
    write_sweep(tmp_path, "llama", 8e-3, math.nan)  # Diverged: never kept.
    assert quality_report.sweep_choice(scale, tmp_path, "llama") == (4e-3, None)
    assert quality_report.chosen_lrs(scale, tmp_path) == {"tnl": 2e-3, "llama": 4e-3}


def test_main_and_ext_runs_use_the_kept_rate_and_fixed_warmup(tmp_path):
    scale = Scale(archs=("tnl", "llama"), seeds=(0, 1))
    main = quality_runs.main_runs(scale, {"tnl": 2e-3})
    assert [r.name for r in main] == ["main-tnl-lr0.002-s0", "main-tnl-lr0.002-s1"]
    cfg = quality_runs.train_cfg(main[1], scale, scale.glu_dim, tmp_path)
    assert (cfg.lr, cfg.seed, cfg.warmup, cfg.seq_len) == (2e-3, 1, 100, 2048)
    ext = quality_runs.ext_runs(scale, {"tnl": 2e-3})[0]
    values = quality_runs.overrides(ext, scale, scale.glu_dim, tmp_path)  # Its source run
    assert {"seq_len=16384", f"init_from={tmp_path / 'main-tnl-lr0.002-s0'}"} <= set(values)
    glu, params, target = quality_runs.matched_glu(scale, "llama")
    assert abs(params / target - 1) < 0.01  # Parameters matched to TNL's within 1%.


def test_each_extension_follows_its_source_run_and_waits_for_its_checkpoint(tmp_path):
    import types

    from benchmarks.quality import quality_study
    scale = Scale(archs=("tnl", "llama"), seeds=(0, 1))
    assert quality_study.study_phases(["sweep", "main", "ext", "mqar"]) == \
        ["sweep", "main+ext", "mqar"]
    ordered = [r.name for r in quality_runs.main_and_ext_runs(scale, {"tnl": 2e-3, "llama": 4e-3})]
    assert ordered == ["main-tnl-lr0.002-s0", "ext-tnl-lr0.002-s0", "main-llama-lr0.004-s0",
                       "ext-llama-lr0.004-s0", "main-tnl-lr0.002-s1", "main-llama-lr0.004-s1"]
    args = types.SimpleNamespace(root=tmp_path, set=[])
    for phase, seed in (("ext", 0), ("pk", 1)):
        status = quality_study.do_run(Run(phase, "tnl", 2e-3, seed), scale, args,
                                      deadline=None, eval_batches=1)
        assert status.startswith(f"skipped: main-tnl-lr0.002-s{seed} has no checkpoint here")


def test_the_passkey_fine_tune_is_the_extension_with_passkey_rows(tmp_path):
    from benchmarks.quality import quality_study
    scale = Scale(archs=("tnl", "hybrid8"), seeds=(0, 1), pk_seeds=(1,))
    assert quality_study.study_phases(["main", "ext", "pk"]) == ["main+ext+pk"]
    assert quality_study.study_phases(["pk"]) == ["pk"]
    chosen = {"tnl": 2e-3, "hybrid8": 2e-3}
    ordered = [r.name for r in quality_runs.main_and_ext_runs(scale, chosen, ("ext", "pk"))]
    assert ordered == ["main-tnl-lr0.002-s0", "ext-tnl-lr0.002-s0", "main-hybrid8-lr0.002-s0",
                       "ext-hybrid8-lr0.002-s0", "main-tnl-lr0.002-s1", "pk-tnl-lr0.002-s1",
                       "main-hybrid8-lr0.002-s1", "pk-hybrid8-lr0.002-s1"]  # pk: seed 1's.
    assert quality_runs.ext_runs(scale, chosen, "pk")[0] == Run("pk", "tnl", 2e-3, 1)
    two = dataclasses.replace(scale, pk_seeds=(1, 0))  # A second seed checks the first.
    assert [r.name for r in quality_runs.ext_runs(two, chosen, "pk")] == [
        "pk-tnl-lr0.002-s1", "pk-hybrid8-lr0.002-s1", "pk-tnl-lr0.002-s0",
        "pk-hybrid8-lr0.002-s0"]
    assert [r.name for r in quality_runs.main_and_ext_runs(two, chosen, ("pk",))][:3] == [
        "main-tnl-lr0.002-s0", "pk-tnl-lr0.002-s0", "main-hybrid8-lr0.002-s0"]
    ext = quality_runs.overrides(Run("ext", "hybrid8", 2e-3, 1), scale, 1408, tmp_path)
    pk = quality_runs.overrides(Run("pk", "hybrid8", 2e-3, 1), scale, 1408, tmp_path)
    steps = scale.steps(scale.pk_tokens)  # Longer than the text-only extension.
    assert set(pk) - set(ext) == {f"run_dir={tmp_path / 'pk-hybrid8-lr0.002-s1'}",
                                  "passkey_rows=0.75", f"steps={steps}",
                                  f"eval_every={steps // scale.evals}",
                                  f"checkpoint_every={steps // 4}", f"warmup={scale.warmup_steps}"}
    assert {"seq_len=16384", f"init_from={tmp_path / 'main-hybrid8-lr0.002-s1'}",
            "seed=1"} <= set(pk)


def test_passkey_table_leaves_out_cells_of_an_earlier_question():
    cell = {"length": 2048, "depth": 0.5, "rows": 8, "accuracy": 0.75, "digit_accuracy": 0.9}
    now = {"run": "main-a", "passkey": [{**cell, "question": passkey.QUESTION}]}
    old = {"run": "main-b", "passkey": [{**cell, "question": "assert PASS_KEY == "}]}
    before = {"run": "main-c", "passkey": [cell]}  # Saved before results named it.
    lines = quality_report.passkey_lines([now, old, before])
    assert lines[2] == "| main-a | 0.75 (0.90) |"
    assert len(lines) == 4 and lines[3].endswith("main-b, main-c)")


def test_passkey_by_depth_shows_the_fine_tuned_runs_at_one_length():
    cell = lambda depth, accuracy, length=16384: {
        "length": length, "depth": depth, "rows": 8, "accuracy": accuracy,
        "digit_accuracy": 0.5 + accuracy / 2, "question": passkey.QUESTION}
    pk = {"run": "pk-a", "phase": "pk",
          "passkey": [cell(0.1, 0.0), cell(0.9, 1.0), cell(0.1, 1.0, length=2048)]}
    main = {"run": "main-a", "phase": "main", "passkey": [cell(0.1, 0.25)]}
    lines = quality_report.passkey_depth_lines([main, pk], 16384)
    assert lines == ["| run | depth 0.1 | depth 0.9 |", "|---|---|---|",
                     "| pk-a | 0.00 (0.50) | 1.00 (1.00) |"]


def test_a_run_is_not_started_when_its_history_says_it_would_not_finish(tmp_path):
    from benchmarks.quality import quality_study

    scale = Scale(archs=("tnl",), tokens=1e8, ext_tokens=2.5e7, batch_tokens=1 << 17)
    main = Run("main", "tnl", 2e-3)
    assert quality_study.expected_seconds(main, scale, tmp_path) is None  # No history.
    write_sweep(tmp_path, "tnl", 2e-3, 1.6)
    result_file = tmp_path / Run("sweep", "tnl", 2e-3).name / "quality.json"
    result = {**json.loads(result_file.read_text()), "task": "lm", "tokens_per_s": 5e5}
    result_file.write_text(json.dumps(result))
    steps = scale.steps(scale.tokens)
    expected = steps * scale.batch_tokens / 5e5 + quality_study.OVERHEAD_S["main"]
    assert math.isclose(quality_study.expected_seconds(main, scale, tmp_path), expected)
    half_done = quality_study.expected_seconds(main, scale, tmp_path, steps_done=steps // 2)
    assert half_done < expected - 90  # Resumed: only the steps left count.
    ext = quality_study.expected_seconds(Run("ext", "tnl", 2e-3), scale, tmp_path)
    assert math.isclose(ext, scale.steps(scale.ext_tokens) * scale.batch_tokens / 2.5e5
                        + quality_study.OVERHEAD_S["ext"])  # Half the 2K rate.
    ext_file = tmp_path / Run("ext", "tnl", 2e-3).name / "quality.json"
    ext_file.parent.mkdir()
    ext_file.write_text(json.dumps({**result, "run": "ext-tnl-lr0.002-s0", "phase": "ext",
                                    "tokens_per_s": 2e5}))
    pk = quality_study.expected_seconds(Run("pk", "tnl", 2e-3, 2), scale, tmp_path)
    assert math.isclose(pk, scale.steps(scale.pk_tokens) * scale.batch_tokens / 2e5
                        + quality_study.OVERHEAD_S["pk"])  # The ext runs' rate: 16K rows.
    assert quality_study.expected_seconds(Run("mqar", "tnl", 1e-3), scale, tmp_path) is None


@pytest.mark.parametrize("flag, value", [("--pk-tokens", "0"), ("--tokens", "-1e8"),
                                         ("--ext-tokens", "nan"), ("--sweep-tokens", "many"),
                                         ("--mqar-steps", "0"), ("--budget-seconds", "inf")])
def test_a_size_that_is_not_positive_is_named(capsys, flag, value):
    from benchmarks.quality import quality_study
    with pytest.raises(SystemExit):
        quality_study.parse([f"{flag}={value}"])  # "=": "-1e8" is no option.
    error = capsys.readouterr().err
    assert flag in error and repr(value) in error and "expected" in error
    assert quality_study.scale_from(quality_study.parse(["--pk-tokens", "5e7"])).pk_tokens == 5e7


def test_only_names_the_kept_rate_once_the_sweep_is_complete(tmp_path):
    from benchmarks.quality import quality_study

    scale = Scale(archs=("tnl", "hybrid8-qk"), lrs=(1e-3, 2e-3, 4e-3))
    for lr, bpb in [(1e-3, 1.7), (2e-3, 1.6), (4e-3, 1.65)]:
        write_sweep(tmp_path, "hybrid8-qk", lr, bpb)
    only = "main-hybrid8-qk-lrkept-s2,pk-hybrid8-qk-lrkept-s2,ext-tnl"
    assert quality_study.resolve_kept(only, scale, tmp_path) == \
        "main-hybrid8-qk-lr0.002-s2,pk-hybrid8-qk-lr0.002-s2,ext-tnl"
    with pytest.raises(SystemExit, match="no kept rate for architecture 'tnl'"):
        quality_study.resolve_kept("main-tnl-lrkept-s0", scale, tmp_path)  # Not swept.
    with pytest.raises(SystemExit, match="'tnl-lerned'.*expected one of.*nearest: tnl-learned"):
        quality_study.resolve_kept("main-tnl-lerned-lrkept-s0", scale, tmp_path)
