"""The scaling model's arithmetic (benchmarks/scaling/scaling_model.py), by hand."""
import pytest

from benchmarks.scaling import figures, scaling_model as sm
from benchmarks.scaling.step_collectives import parse_case
from tnl_jax.model.counting import count_flops_per_token, count_params


def test_hosts_are_eight_consecutive_devices_of_the_mesh():
    assert not sm.crosses_hosts((8, 8, 1, 1), "fsdp")  # stride 1, 8 devices: one host
    assert sm.crosses_hosts((8, 8, 1, 1), "data")  # stride 8: a device per host
    assert not sm.crosses_hosts((8, 4, 1, 2), "fsdp,tensor")
    assert sm.crosses_hosts((8, 4, 1, 2), "data,fsdp")
    assert not sm.crosses_hosts((1, 4, 2, 1), "context,fsdp")


def test_link_seconds_split_parameter_and_critical_path_collectives():
    traffic = {"data": 3 * figures.NETWORK_BYTES_PER_S, "fsdp": 2 * figures.NVLINK_BYTES_PER_S,
               "tensor": 5 * figures.NVLINK_BYTES_PER_S,
               "data,context": 7 * figures.NETWORK_BYTES_PER_S}
    param, other = sm.link_seconds((8, 2, 2, 2), traffic)
    assert param == pytest.approx(3 + 2)
    assert other == pytest.approx(5 + 7)


def test_per_layer_bytes_are_scaled_linearly_to_the_depth():
    case = sm.Case("tnl-1b", 16, 8192, (2, 4, 1, 1))
    cache = {case.at_depth(2): {"traffic": {"data": 10.0, "fsdp": 4.0}},
             case.at_depth(3): {"traffic": {"data": 13.0, "fsdp": 4.5, "tensor": 1.0}}}
    assert sm.traffic_at_depth(cache, case, 16) == pytest.approx(
        {"data": 10 + 14 * 3, "fsdp": 4 + 14 * 0.5, "tensor": 14 * 1.0})
    assert parse_case(case.at_depth(3)) == {"preset": "tnl-1b", "layers": 3, "rows": 16,
                                            "row_length": 8192, "mesh": (2, 4, 1, 1),
                                            "overrides": []}


def test_serial_and_overlapped_step():
    case = sm.Case("tnl-1b", 16, 8192, (8, 1, 1, 1))
    layers = 16  # tnl-1b
    p = sm.Prediction(case, compute_s=1.0, param_comm_s=0.8, other_comm_s=0.1, memory_gb=1)
    assert p.serial_s == pytest.approx(1.9)
    assert p.overlapped_s == pytest.approx(1.0 + 0.8 / layers + 0.1)
    hidden_bound = sm.Prediction(case, 0.5, 0.8, 0.0, 1)  # communication-bound
    assert hidden_bound.overlapped_s == pytest.approx(0.8 * 15 / 16 + 0.8 / 16)
    assert p.tokens_per_s(overlap=False) == pytest.approx(16 * 8192 / 1.9)
    flops = count_flops_per_token(sm.model_config("tnl-1b"), 8192)
    assert p.mfu(True) == pytest.approx(16 * 8192 / p.overlapped_s * flops
                                        / (8 * figures.PEAK_FLOPS))


def test_predict_compute_memory_and_efficiency():
    case = sm.Case("tnl-1b", 16, 8192, (4, 2, 1, 1))
    cache = {case.at_depth(2): {"traffic": {"data": 1e9}},
             case.at_depth(3): {"traffic": {"data": 2e9}}}
    p = sm.predict(case, cache, mfu=0.5)
    flops = count_flops_per_token(sm.model_config("tnl-1b"), 8192) * 16 * 8192
    assert p.compute_s == pytest.approx(flops / 8 / (figures.PEAK_FLOPS * 0.5))
    assert p.param_comm_s == pytest.approx((1e9 + 14 * 1e9) / figures.NVLINK_BYTES_PER_S)
    params = count_params(sm.model_config("tnl-1b"))
    activations = sm.activation_bytes_per_unit("projections") * 16 * 8192 / 8 * 2048 * 16
    cfg = sm.model_config("tnl-1b")  # fsdp: the head's float32 gradient whole on each device
    head = 4 * cfg.vocab_size * cfg.decoder_embed_dim
    assert p.memory_gb == pytest.approx((16 * params / 2 + activations + head) / 1e9)
    for gpu, measured in figures.MEASURED_MFU.items():
        assert sm.efficiency("tnl-1b", "projections", gpu) == measured[("tnl-1b",
                                                                         "projections")]
        assert sm.efficiency("tnl-7b", "full", gpu) == pytest.approx(
            measured[("tnl-1b", "projections")] * 3 / 4)
    assert sm.efficiency("tnl-1b", "projections") == figures.MEASURED_MFU["H100"][
        ("tnl-1b", "projections")]  # The default GPU, as the prediction table's.
    with pytest.raises(ValueError, match="model.remat='dots'"):
        sm.activation_bytes_per_unit("dots")


def test_the_context_op_extra_time():
    assert sm.cp_extra_seconds(sm.Case("tnl-1b", 16, 8192, (8, 1, 1, 1))) == 0.0
    case = sm.Case("tnl-1b", 2, 65536, (1, 2, 2, 1))  # 2 rows over fsdp, halves over context
    share = figures.OP_SHARE_MS / 1e3 * (65536 / 2 * 16) / figures.OP_SHARE_HEAD_TOKENS
    assert sm.cp_extra_seconds(case) == pytest.approx(
        (figures.OP_SPLIT_X_SHARE - 1) * share * 16)
    assert sm.cp_extra_seconds(case, 1.2) == pytest.approx(0.2 * share * 16)


def test_check_table_without_collectives_is_the_one_gpu_rate_times_the_devices():
    cache = {case.at_depth(d): {"traffic": {}} for _, case, _ in sm.calibration_cases()
             for d in sm.DEPTHS}
    table, _ = sm.check_table(cache)
    dp = next(line for line in table.splitlines() if line.startswith("| DP=2"))
    predicted = float(dp.split("|")[3].strip().rstrip("K"))
    assert predicted == pytest.approx(2 * 140.3, abs=0.05)
