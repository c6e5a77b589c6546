"""Joining a multi-process run from the environment, as the README's recipe without
SLURM starts one: two local CPU processes find each other."""
import os
import socket
import subprocess
import sys

import pytest

from tests.paths import ROOT
from tnl_jax.training import sharding

PROBE = """
import jax
from tnl_jax.training.sharding import maybe_initialize_distributed
maybe_initialize_distributed()
print(jax.process_index(), jax.process_count(), jax.device_count())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_local_processes_join_one_run():
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": address,
           "JAX_NUM_PROCESSES": "2", "XLA_FLAGS": ""}
    processes = [subprocess.Popen([sys.executable, "-c", PROBE], cwd=ROOT, text=True,
                                  env={**env, "JAX_PROCESS_ID": str(i)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for i in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-2000:]
    # Each process: its index, two processes, and the devices of both.
    assert sorted(out.split() for out, _ in outputs) == [["0", "2", "2"], ["1", "2", "2"]]


@pytest.mark.parametrize("variables, message", [
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID not set"),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "two",
      "JAX_PROCESS_ID": "0"}, "must be integers"),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2",
      "JAX_PROCESS_ID": "2"}, r"JAX_PROCESS_ID=2 must be in \[0, JAX_NUM_PROCESSES=2\)"),
])
def test_an_incomplete_environment_names_what_is_wrong(monkeypatch, variables, message):
    for name in sharding.DISTRIBUTED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        sharding.maybe_initialize_distributed()
