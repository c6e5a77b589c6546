"""The HLO collective reader (``training.collectives``): bytes, executions, groups and
mesh axes, on hand-written HLO and on programs compiled over 4 fake devices."""
import json
import subprocess
import sys

import pytest
from jax.sharding import AbstractMesh

from tests.paths import ROOT
from tests.training.runs import run_env
from tnl_jax.training.collectives import (array_bytes, device_groups, read_collectives,
                                          traffic_by_axes)

MESH = AbstractMesh((2, 2), ("data", "fsdp"))  # device i at (i // 2, i % 2)

# Two collectives in a loop of 3 trips, the all-reduce's tuple element 0 only sliced.
HLO = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%body (p: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %p = (s32[], f32[8,16]) parameter(0)
  %x = f32[8,16]{1,0} get-tuple-element(%p), index=1
  %ag = bf16[4,6]{1,0} all-gather(%x), channel_id=1, replica_groups=[2,2]<=[2,2]T(1,0), dimensions={0}, use_global_device_ids=true
  ROOT %t = (s32[], f32[8,16]) tuple(%i, %x)
}

%cond (p: (s32[], f32[8,16])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

ENTRY %main (x: f32[8,16]) -> f32[4,16] {
  %x = f32[8,16]{1,0} parameter(0)
  %w = (s32[], f32[8,16]) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %ar = (f32[8,16]{1,0}, f32[]) all-reduce(%x, %y), channel_id=2, replica_groups={{0,1},{2,3}}, use_global_device_ids=true, to_apply=%add
  %g0 = f32[8,16]{1,0} get-tuple-element(%ar), index=0
  %g1 = f32[] get-tuple-element(%ar), index=1
  %dynamic-slice.1 = f32[4,16]{1,0} dynamic-slice(%g0, %o, %o), dynamic_slice_sizes={4,16}
  %use = f32[] add(%g1, %g1)
  ROOT %cp = f32[4,16]{1,0} collective-permute(%dynamic-slice.1), channel_id=3, source_target_pairs={{0,2},{2,0},{1,3},{3,1}}
}
"""


def test_hand_written_program_counts_bytes_trips_groups_and_axes():
    found = {c.kind: c for c in read_collectives(HLO, MESH)}
    gather, reduce, permute = found["all-gather"], found["all-reduce"], found["collective-permute"]
    assert (gather.bytes, gather.executions, gather.group_size) == (4 * 6 * 2, 3, 2)
    assert gather.axes == ("data",)  # groups {0,2}, {1,3}: devices differing in data
    assert gather.traffic == pytest.approx(48 / 2)
    assert (reduce.bytes, reduce.executions, reduce.axes) == (8 * 16 * 4 + 4, 1, ("fsdp",))
    assert reduce.kept_bytes == 4 * 16 * 4 + 4  # element 0 sliced to half, element 1 whole
    assert (gather.arrays, reduce.arrays) == (("bf16[4,6]",), ("f32[8,16]", "f32[]"))
    k = reduce.bytes / reduce.kept_bytes  # reduce-scatter, then gather the kept part
    assert reduce.traffic == pytest.approx((1 / 2 + (2 / k - 1) / 2) * reduce.bytes)
    assert (permute.bytes, permute.group_size, permute.axes) == (256, 2, ("data",))
    totals = traffic_by_axes(list(found.values()))
    assert totals[("data",)] == pytest.approx(3 * 24 + 256)


@pytest.mark.parametrize("attributes, groups", [
    ("replica_groups={{0,2},{1,3}}, to_apply=%add", [[0, 2], [1, 3]]),
    ("replica_groups=[2,2]<=[4]", [[0, 1], [2, 3]]),
    ("replica_groups=[1,4]<=[4]", [[0, 1, 2, 3]]),
    ("replica_groups={}, to_apply=%add", [[0, 1, 2, 3]]),
    ("replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_0'}, use_global_device_ids=true",
     [[0, 2], [1, 3]]),
    ("replica_groups=mesh['axis_0'=2,'axis_1'=2], device_ids=([2,2]T(1,0)) {'axis_1'}, x=1",
     [[0, 2], [1, 3]]),
])
def test_every_group_form(attributes, groups):
    assert sorted(map(sorted, device_groups(attributes, 4))) == groups


def test_array_bytes_of_arrays_and_tuples():
    assert array_bytes("bf16[3,5]{1,0}") == 30
    assert array_bytes("(f32[2,2]{1,0}, pred[7], s64[])") == 16 + 7 + 8
    with pytest.raises(ValueError, match="unknown element type 'q9'"):
        array_bytes("q9[2]")


COMPILED = """
import json
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((2, 2), ("data", "fsdp"))

def looped_psum(x):
    return jax.lax.fori_loop(0, 3, lambda i, y: y + jax.lax.psum(y, "data"), x)

def gather(x):
    return jax.lax.all_gather(x, "fsdp", tiled=True)

programs = {
    "psum": jax.jit(jax.shard_map(looped_psum, mesh=mesh, in_specs=P("data", "fsdp"),
                                  out_specs=P("data", "fsdp"))),
    "gather": jax.jit(jax.shard_map(gather, mesh=mesh, in_specs=P("data", "fsdp"),
                                    out_specs=P("data", None), check_vma=False)),
}
split = NamedSharding(mesh, P("data", "fsdp"))
x = {"psum": jax.ShapeDtypeStruct((16, 32), jnp.float32, sharding=split),
     "gather": jax.ShapeDtypeStruct((8, 12), jnp.float32, sharding=split)}
print(json.dumps({k: f.lower(x[k]).compile().as_text() for k, f in programs.items()}))
"""


def test_compiled_programs_on_four_devices():
    out = subprocess.run([sys.executable, "-c", COMPILED], cwd=ROOT, env=run_env(devices=4),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    texts = json.loads(out.stdout.splitlines()[-1])
    (psum,) = read_collectives(texts["psum"], MESH)
    # Each device's (8, 16) float32 block, reduced over data, 3 trips.
    assert (psum.kind, psum.bytes, psum.executions, psum.axes) == ("all-reduce", 512, 3, ("data",))
    assert psum.traffic == pytest.approx(512)  # 2 (n-1)/n of the block, n = 2
    (gather,) = read_collectives(texts["gather"], MESH)
    # (4, 6) float32 blocks gathered over fsdp along rows into (8, 6): 192 bytes, half
    # of them sent. (XLA:CPU gathers a bf16 block as float32: bf16 bytes read on fake
    # CPU devices are twice a GPU's.)
    assert (gather.kind, gather.bytes, gather.executions, gather.axes) == (
        "all-gather", 192, 1, ("fsdp",))
    assert gather.traffic == pytest.approx(96)
