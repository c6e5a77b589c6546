"""TensorBoard event files beside metrics.jsonl: the same numbers, read back from the
files; the `tensorboard` key's auto/on/off; only process 0 writes."""
import struct
from pathlib import Path

import pytest

from tnl_jax.training import config as train_config
from tnl_jax.training import tensorboard
from tnl_jax.training.metrics import read_metrics


def read_events(directory: Path) -> list:
    """Every event of the TFRecord files in ``directory``, each record's length and
    data checked against their masked CRC-32C (the format TensorBoard reads)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c
    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            header = data[at:at + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[at + 8:at + 12])
            body = data[at + 12:at + 12 + length]
            (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
            assert header_crc == masked_crc32c(header) and body_crc == masked_crc32c(body)
            events.append(Event.FromString(body))
            at += 16 + length
    return events


def scalars(events) -> dict[tuple[str, int], float]:
    return {(value.tag, event.step): value.simple_value
            for event in events if event.HasField("summary") for value in event.summary.value}


def test_the_extra_is_installed_for_the_tests():
    assert tensorboard.available(), f"the tests need the writer: {tensorboard.INSTALL}"


def test_a_run_writes_every_logged_number_as_a_scalar(tiny_run):
    """The shared run (tensorboard=auto, the extra installed): each number of each
    metrics.jsonl record is the scalar of its tag at its step."""
    assert tensorboard.available()
    written = scalars(read_events(tiny_run.dir / tensorboard.DIRECTORY))
    expected = {(key, record["step"]): value for record in read_metrics(
        tiny_run.dir / "metrics.jsonl") for key, value in record.items() if key != "step"}
    assert {"loss", "grad_norm", "lr", "tokens_per_s", "eval_loss"} <= {k for k, _ in expected}
    assert written.keys() == expected.keys()
    for key, value in expected.items():
        assert written[key] == pytest.approx(value, rel=1e-6), key  # Stored as float32.
    assert f"TensorBoard events in {tiny_run.dir / tensorboard.DIRECTORY}" in tiny_run.output


def test_a_resumed_log_hides_the_steps_it_logs_again(tmp_path, rng):
    """TensorBoard's purge: a START session log at the first step the resumed run logs."""
    start = int(rng.integers(2, 100))
    log = tensorboard.EventLog(tmp_path, start_step=start)
    loss = float(rng.uniform(1, 5))
    log.write({"step": start + 1, "loss": loss, "note": "text is not a scalar", "flag": True})
    log.close()
    events = read_events(tmp_path)
    starts = [e.step for e in events if e.HasField("session_log")]
    assert starts == [start + 1]
    assert scalars(events) == {("loss", start + 1): pytest.approx(loss, rel=1e-6)}


@pytest.mark.parametrize("setting, installed, is_main, writes", [
    ("auto", True, True, True), ("auto", False, True, False), (True, True, True, True),
    (False, True, True, False), (True, True, False, False), ("auto", True, False, False),
])
def test_who_writes(monkeypatch, tmp_path, setting, installed, is_main, writes):
    monkeypatch.setattr(tensorboard, "available", lambda: installed)
    log = tensorboard.open_event_log(setting, tmp_path / "run", 0, is_main)
    assert (log is not None) == writes
    if log is not None:
        log.close()
    assert (tmp_path / "run" / tensorboard.DIRECTORY).exists() == writes


@pytest.mark.parametrize("override, value", [
    ("tensorboard=on", True), ("tensorboard=off", False), ("tensorboard=true", True),
    ("tensorboard=auto", "auto")])
def test_on_and_off_read_as_yaml_booleans(override, value):
    assert train_config.load(None, [override]).tensorboard == value
    assert type(train_config.load(None, [override]).tensorboard) is type(value)


def test_on_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(tensorboard, "available", lambda: False)
    with pytest.raises(ValueError, match=r"tensorboard=True: the tensorboardX package is not "
                                         r"installed; pip install 'tnl-jax\[tensorboard\]'"):
        train_config.load(None, ["tensorboard=on"])
    assert train_config.load(None, ["tensorboard=auto"]).tensorboard == "auto"


@pytest.mark.parametrize("value", ["maybe", "3", "0.5"])
def test_other_settings_are_refused(value):
    with pytest.raises(ValueError, match=r"tensorboard=.*: expected auto \(when tensorboardX "
                                         r"is installed\), true or on"):
        train_config.load(None, [f"tensorboard={value}"])
