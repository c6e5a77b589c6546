"""The quality study's figures read off results: met, missed, or not yet measured when a
run the figure needs has no result; the thresholds as the issue states them."""
import math

import numpy as np

from benchmarks.quality import quality_figures as qf, quality_report
from benchmarks.quality.quality_runs import Scale
from tnl_jax.evaluation import documents, passkey

TEST_KEYS = [k for k in (f"f{i}.py:0" for i in range(40)) if not documents.is_validation(k)][:3]


def windows(bits_per_byte: dict[int, float], gain_column: float = 0.0) -> list[dict]:
    """Window scores of the test documents at ``bits_per_byte[size]``; the 8K-16K bucket
    column ``gain_column`` bits/byte above the rest at the shortest window."""
    out = []
    for size, value in bits_per_byte.items():
        count = np.full((len(TEST_KEYS), 5), 100.0)
        loss = count * value * math.log(2)
        if size == min(bits_per_byte):
            loss[:, 3] += count[:, 3] * gain_column * math.log(2)
        out.append(documents.WindowScores(size, TEST_KEYS, loss, count).to_dict())
    return out


def mqar(arch: str, recall: float, lr: float = 1e-3) -> dict:
    cells = [{"length": 512, "pairs": 64, "recall": recall}]
    return {"phase": "mqar", "arch": arch, "lr": lr,
            "mqar": {"in_distribution": cells, "extrapolation": []}}


def test_a_figure_waits_for_every_run_it_needs_then_decides():
    figure = qf.Figure("x", {"a": 0.95, "b": None, "c": 0.5}, ("a", "b"),
                       lambda v, _: v >= 0.9, ".2f")
    assert figure.status() == "not yet measured: b"
    assert figure.line() == "| x | a 0.95; c 0.50 (reported) | not yet measured: b |"
    figure.measured["b"] = 0.91
    assert figure.status() == "met"
    figure.measured["b"] = 0.89
    assert figure.status() == "missed"


def test_versus_the_tuned_softmax_uses_the_paired_difference():
    pair = {"relative": -0.025, "relative_interval": [-0.05, 0.001], "seeds": 3}
    numbers = {"tnl": {"vs_llama": pair}, "hybrid8": {"vs_llama": {**pair, "relative": 0.02}},
               "hybrid4": {"vs_llama": {**pair, "relative": 0.005}}}
    first, second = qf.figures([], numbers, Scale())[:2]
    assert first.status() == "met" and "95% CI -5.00% to +0.10%, 3 seed(s)" in first.line()
    assert second.measured == {"hybrid8": 0.02, "hybrid4": 0.005, "hybrid8-qk": None,
                               "hybrid4-qk": None, "hybrid4-qk-nope": None}
    assert second.status() == "missed"  # hybrid8 is 2% above, past the 1% allowed.
    # A variant that passes is named, and the figure stays missed.
    numbers["hybrid4-qk"] = {"vs_llama": {**pair, "relative": -0.03}}
    second = qf.figures([], numbers, Scale())[1]
    assert second.status() == "missed (a variant passes: hybrid4-qk)"
    assert "hybrid4-qk 95% CI -5.00% to +0.10%, 3 seed(s)" in second.line()
    del numbers["hybrid4-qk"]
    # The variant is reported, not needed: its result alone does not meet the figure.
    numbers["hybrid8-qk"] = {"vs_llama": {**pair, "relative": -0.01}}
    numbers["hybrid8"]["vs_llama"]["relative"] = None
    numbers["hybrid4"]["vs_llama"]["relative"] = None
    second = qf.figures([], numbers, Scale())[1]
    assert second.status() != "met" and "hybrid8-qk -1.00% (reported)" in second.line()


def test_mqar_takes_each_arch_best_rate_over_seeds_and_needs_both_softmax_models():
    results = [mqar("hybrid", 0.5, 3e-4), mqar("hybrid", 0.97), mqar("hybrid", 0.91),
               mqar("softmax", 0.999), mqar("tnl", 0.04)]  # Two hybrid seeds at 1e-3.
    figure = qf.figures(results, {}, Scale())[2]
    assert math.isclose(figure.measured["hybrid"], 0.94) and figure.measured["tnl"] == 0.04
    assert figure.status() == "not yet measured: llama"
    assert qf.figures([*results, mqar("llama", 0.013)], {}, Scale())[2].status() == "missed"
    assert "hybrid 2 of 2 seeds ≥ 0.90 at lr 0.001" in figure.line()


def test_mqar_says_how_many_seeds_learned_the_task():
    runs = [mqar("llama", 0.013), mqar("llama", 1.0), mqar("llama", 0.014),
            mqar("llama", 0.05, 3e-3)]
    assert math.isclose(qf.mqar_recall(runs, "llama"), 1.027 / 3)
    assert qf.mqar_learned_text(runs, "llama") == "llama 1 of 3 seeds ≥ 0.90 at lr 0.001"
    assert qf.mqar_learned_text(runs, "softmax") == ""


def test_extrapolation_gain_and_passkey_from_the_runs():
    sizes = Scale().windows  # 512 ... 65536, main rows 2048
    results = []
    for arch, worst in (("tnl", 1.01), ("hybrid8", 1.015), ("hybrid4", 1.03)):
        main = {size: 1.0 * (worst if 8192 <= size <= 32768 else 1.0) for size in sizes}
        main[16384] = 1.0  # The worst window is 8K and 32K's.
        results.append({"phase": "main", "arch": arch, "seed": 0, "windows": windows(main)})
    figure = qf.figures(results, {}, Scale())[3]
    assert math.isclose(figure.measured["hybrid4"], 0.03)
    assert figure.status() == "missed"  # hybrid4 loses 3% at 8K-32K.
    cell = {"length": qf.PASSKEY_LENGTH, "depth": 0.5, "question": passkey.QUESTION}
    for arch, gain, accuracy in (("tnl", 0.10, 0.0), ("hybrid8", 0.20, 0.95),
                                 ("hybrid4", 0.16, 0.9), ("llama", 0.15, 1.0)):
        results.append({"phase": "ext", "arch": arch, "seed": 0,
                        "windows": windows({s: 1.0 for s in sizes}, gain_column=gain),
                        "passkey": [{**cell, "accuracy": 0.0}]})
        results.append({"phase": "pk", "arch": arch, "seed": 0,
                        "passkey": [{**cell, "accuracy": accuracy},
                                    {**cell, "accuracy": 0.0, "question": "old"}]})
    gain, key = qf.figures(results, {}, Scale())[4:]
    assert math.isclose(gain.measured["hybrid8"], 0.20) and gain.status() == "missed"  # TNL's
    assert key.measured["hybrid8"] == 0.95 and key.status() == "met"  # Old question left out.
    assert "after the text-only extension: tnl 0.00, hybrid8 0.00" in key.line()


def test_main_table_pairs_an_architecture_over_the_seeds_it_shares_with_the_baseline():
    def main(arch: str, seed: int, value: float) -> dict:
        return {"phase": "main", "arch": arch, "seed": seed, "curve": [], "tokens_per_s": 1.0,
                "mfu": 0.1, "windows": windows({2048: value})}
    llama = [main("llama", s, 1.0 + 0.01 * s) for s in (0, 1, 2)]
    hybrid = [main("hybrid8", 0, 1.05), main("hybrid8", 1, 1.06 * 1.01)]
    lines, numbers = quality_report.main_lines([*llama, *hybrid], 2048)
    pair = numbers["hybrid8"]["vs_llama"]
    assert pair["seed_list"] == [0, 1] and pair["seeds"] == 2
    assert math.isclose(pair["relative"], (1.05 + 1.0706) / (1.0 + 1.01) - 1, rel_tol=1e-9)
    assert "seeds 0,1" in next(line for line in lines if line.startswith("| hybrid8"))
    assert "| baseline |" in next(line for line in lines if line.startswith("| llama"))
