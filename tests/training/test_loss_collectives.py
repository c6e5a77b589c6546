"""The tied embedding's gradient in the compiled training step on 4 fake devices: the
chunked loss reduces it across devices once per step, as the unchunked loss does,
not once per chunk (``training.collectives`` reads the step's HLO).

Before the head's weight got a copy per device (``losses._scanned``), the step below
(8 loss chunks per device) ran, for DP=4, 8 all-reduces of the (512, 32) head
gradient inside the chunks' loop plus one after it for the input embedding: 9 where
the unchunked step has 2 (the head's and the lookup's, in one tuple all-reduce); FSDP
and CP each added 16 (8 per mesh axis)."""
import json
import subprocess
import sys

import pytest

from tests.paths import ROOT
from tests.training.runs import run_env

VOCAB, WIDTH, CHUNKS = 512, 32, 8
MESHES = {"DP=4": (4, 1, 1, 1), "DP=2 x FSDP=2": (2, 2, 1, 1), "DP=2 x CP=2": (2, 1, 2, 1)}

COMPILE = f"""
import json
from benchmarks.scaling.step_collectives import compiled_step_text
from tnl_jax.training.collectives import read_collectives
found = {{}}
for name, shape in {MESHES!r}.items():
    # 128 tokens per device: 8 chunks (and for DP, all at once to compare with).
    chunks = (8 * 64 // 4 // {CHUNKS}, 0) if name == "DP=4" else (16,)
    kernels = ("chunked", "grads_in_forward") if name == "DP=2 x CP=2" else ("chunked",)
    for chunk, kernel in [(c, k) for c in chunks for k in kernels]:
        case = {{"preset": None, "layers": 1, "rows": 8, "row_length": 64, "mesh": shape,
                 "overrides": ["model.decoder_embed_dim={WIDTH}", "model.vocab_size={VOCAB}",
                               "model.decoder_attention_heads=2", "model.glu_dim=64",
                               f"loss_chunk_tokens={{chunk}}", f"loss_kernel={{kernel}}"]}}
        text, mesh = compiled_step_text(case)
        loops = text.count('"known_trip_count":{{"n":"{CHUNKS}"}}')
        key = f"{{name}}:{{chunk}}" + ("" if kernel == "chunked" else f":{{kernel}}")
        found[key] = loops, [
            (c.kind, c.executions, c.axes, c.arrays) for c in read_collectives(text, mesh)]
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def step_collectives() -> dict:
    """Per ``mesh:chunk_tokens``: the chunk loops of the compiled step, and its
    collectives as ``(kind, executions, axes, arrays)``."""
    out = subprocess.run([sys.executable, "-c", COMPILE], cwd=ROOT, env=run_env(devices=4),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def embedding_traffic(collectives) -> tuple[list[int], dict[str, int]]:
    """The executions per step of each collective that carries the embedding (vocab
    rows: whole, or split over a mesh axis), and per mesh axes reduced over, the
    embedding arrays reduced per step."""
    runs, reduced = [], {}
    for kind, executions, axes, arrays in collectives:
        tables = [a for a in arrays if a.startswith(f"f32[{VOCAB},")]
        if tables:
            runs.append(executions)
            if kind in ("all-reduce", "reduce-scatter"):
                key = ",".join(axes)
                reduced[key] = reduced.get(key, 0) + executions * len(tables)
    return runs, reduced


@pytest.mark.parametrize("mesh", list(MESHES))
def test_the_embedding_gradient_is_reduced_once_per_step(step_collectives, mesh):
    loops, chunked = step_collectives[f"{mesh}:16"]
    assert loops >= 1  # The loss runs as 8 chunks (the loop of 8 trips is there).
    runs, reduced = embedding_traffic(chunked)
    assert runs and set(runs) == {1}, runs  # None of them inside the chunks' loop.
    # Over each mesh axis, at most the head's and the input lookup's gradients, once
    # each (CP: over context, then over data).
    assert reduced and all(count <= 2 for count in reduced.values()), reduced


def test_the_chunked_step_reduces_the_embedding_as_the_unchunked_one(step_collectives):
    chunked, unchunked = (embedding_traffic(step_collectives[f"DP=4:{chunk}"][1])
                          for chunk in (16, 0))
    assert chunked == unchunked == ([1], {"data": 2})  # One tuple all-reduce of both.


def test_the_loss_with_its_gradient_in_the_forward_reduces_the_embedding_once(step_collectives):
    loops, collectives = step_collectives["DP=2 x CP=2:16:grads_in_forward"]
    assert loops >= 1
    runs, reduced = embedding_traffic(collectives)
    assert runs and set(runs) == {1}, runs
    assert reduced == embedding_traffic(step_collectives["DP=2 x CP=2:16"][1])[1]
