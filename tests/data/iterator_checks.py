"""A check shared by the pipeline's tests: an iterator restored from its saved position
gives the batches the original gives from there."""
import numpy as np

from tnl_jax import data


def assert_resumes_exactly(spec: data.DataSpec, skip: int, batches: int) -> None:
    it = data.train_batches(spec)
    for _ in range(skip):
        next(it)
    state = data.IteratorCheckpoint(it).get_state()
    expected = [next(it)["input_ids"] for _ in range(batches)]
    resumed = data.train_batches(spec)
    data.IteratorCheckpoint(resumed).set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["input_ids"], want)
