"""The progress a person watches: step, loss, tokens/s and the time left from the
measured step time, as a tqdm bar on a terminal or a plain line every log_every steps."""
import io
import re

import pytest

from tnl_jax.training import metrics, progress


def test_durations_read_as_a_person_writes_them(rng):
    hours, minutes, seconds = (int(x) for x in rng.integers([1, 0, 0], [24, 60, 60]))
    assert progress.duration(hours * 3600 + minutes * 60 + seconds + 0.9) == \
        f"{hours}h{minutes:02d}m"
    assert progress.duration(minutes * 60 + seconds + 0.9) == (
        f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s")
    assert progress.duration(-3.0) == "0s"


def test_status_reckons_the_time_left_from_the_step_time(rng):
    steps = int(rng.integers(100, 10_000))
    step = int(rng.integers(1, steps))
    loss, rate, step_time = rng.uniform(1, 5), rng.uniform(1e3, 1e6), rng.uniform(0.01, 3)
    line = progress.status(step, steps, {"loss": loss, "tokens_per_s": rate}, step_time)
    left = progress.duration((steps - step) * step_time)
    assert line == (f"loss {loss:.4f} | {rate:,.0f} tok/s | {step_time:.3g} s/step | "
                    f"{left} left")
    # Before a step is timed (the first includes compilation): the loss alone.
    assert progress.status(step, steps, {"loss": loss}, None) == f"loss {loss:.4f}"


def test_throughput_times_steps_but_not_pauses(monkeypatch, rng):
    """Reads at steps 0, 3 (after 3a s), a pause (b s of evaluation), then 5 (2c s
    later): two timed intervals, 5 steps in 3a + 2c seconds."""
    a, b, c = rng.uniform(0.1, 2, size=3)
    start = rng.uniform(10, 1000)
    clock = iter([start, start + 3 * a, start + 3 * a + b, start + 3 * a + b + 2 * c])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    tokens_per_step = int(rng.integers(100, 10_000))
    throughput = metrics.Throughput(tokens_per_step, flops_per_token=1e6)
    assert throughput.update(0) == {} and throughput.seconds_per_step() is None
    assert throughput.update(3)["tokens_per_s"] == pytest.approx(3 * tokens_per_step / (3 * a))
    throughput.pause()
    assert throughput.update(5)["tokens_per_s"] == pytest.approx(2 * tokens_per_step / (2 * c))
    assert throughput.seconds_per_step() == pytest.approx((3 * a + 2 * c) / 5)


def test_plain_lines_every_log_every_steps_and_at_the_last(rng):
    steps, log_every = 10, int(rng.integers(2, 5))
    out = io.StringIO()
    shown = progress.Progress(steps, 0, log_every, interactive=False, file=out)
    losses = rng.uniform(1, 5, size=steps + 1)
    for step in range(1, steps + 1):
        shown.update(step, {"loss": losses[step], "tokens_per_s": 1000.0 * step}, 0.5)
    shown.close()
    expected = sorted({*range(log_every, steps + 1, log_every), steps})
    lines = out.getvalue().splitlines()
    assert [int(re.match(r"step (\d+)/10 \| ", line)[1]) for line in lines] == expected
    assert lines[0] == f"step {expected[0]}/10 | " + progress.status(
        expected[0], steps, {"loss": losses[expected[0]], "tokens_per_s": 1000.0 * expected[0]},
        0.5)


def test_a_terminal_gets_a_bar_with_the_same_status(rng):
    out = io.StringIO()
    shown = progress.Progress(8, 2, 1, interactive=True, file=out)
    loss = rng.uniform(1, 5)
    shown.update(5, {"loss": loss, "tokens_per_s": 2500.0}, 1.5)
    shown.close()
    bar = out.getvalue().split("\r")[-1]
    assert "5/8" in bar and progress.status(5, 8, {"loss": loss, "tokens_per_s": 2500.0},
                                            1.5) in bar


def test_only_process_0_shows_progress(capsys):
    shown = progress.Progress(4, 0, 1, enabled=False, interactive=False)
    shown.update(4, {"loss": 1.5}, 0.1)
    shown.close()
    assert capsys.readouterr() == ("", "")


def test_a_run_prints_its_progress_lines(tiny_run):
    lines = [l for l in tiny_run.output.splitlines() if l.startswith("step ")]
    assert [l.split(" |")[0] for l in lines] == [f"step {s}/4" for s in range(1, 5)]
    assert re.fullmatch(r"step 4/4 \| loss \d+\.\d{4} \| [\d,]+ tok/s \| \S+ s/step \| "
                        r"0s left", lines[-1])
