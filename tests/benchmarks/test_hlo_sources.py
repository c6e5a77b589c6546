"""hlo_sources: each instruction of a compiled program named by the functions of ours
that made it, its phase (forward, recompute, backward), and kernel times summed so."""
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import hlo_sources
from benchmarks.common.hlo_sources import Source
from tnl_jax.model.norms import srms_norm


def _inner_sine(x):
    return jnp.sin(x) * 3.0


def _outer(x):
    return _inner_sine(x) + 1.0


def _loss(w, x):
    y = jax.checkpoint(lambda h: srms_norm(jnp.tanh(h @ w)))(x)
    return jnp.sum(y * y)


def test_frame_chains_run_innermost_first():
    text = jax.jit(_outer).lower(jnp.ones(3)).compile().as_text()
    chains = hlo_sources.frame_chains(text)
    functions = [[f for _, f in chain] for chain in chains.values()]
    assert any(chain[:2] == ["_inner_sine", "_outer"] for chain in functions), functions


def test_part_of_names_our_innermost_function_and_its_caller_in_another_file():
    chain = [("/r/tnl_jax/model/norms.py", "srms_norm"),
             ("/r/tnl_jax/model/norms.py", "SRMSNorm.__call__"),
             ("/site-packages/flax/nnx/module.py", "Module.__call__"),
             ("/r/tnl_jax/model/decoder_layer.py", "DecoderLayer.__call__"),
             ("/r/tnl_jax/model/language_model.py", "LayerStack.__call__")]
    assert hlo_sources.part_of(chain) == "decoder_layer.DecoderLayer.__call__ > norms.srms_norm"
    assert hlo_sources.part_of([("/x/jax/numpy.py", "f")]) == "(outside our code)"
    assert hlo_sources.part_of([("/r/tnl_jax/a.py", "f.<locals>.g")]) == "a.f"


def test_phases_of_a_rematerialised_gradient():
    w, x = jnp.ones((8, 8)) / 8, jnp.asarray(np.random.default_rng(0).normal(size=(4, 8)))
    text = jax.jit(jax.grad(_loss)).lower(w, x).compile().as_text()
    sources = hlo_sources.instruction_sources(text)
    norm = {s.phase for s in sources.values() if s.part.endswith("norms.srms_norm")}
    assert {"backward"} <= norm and norm <= {"forward", "recompute", "backward"}, norm
    assert hlo_sources.phase_of("jit(f)/transpose(jvp())/rematted_computation/mul") == \
        "recompute"
    assert hlo_sources.phase_of("jit(f)/transpose(jvp())/mul") == "backward"
    assert hlo_sources.phase_of("jit(f)/jvp()/mul") == "forward"


def test_a_fusion_takes_its_callees_most_common_part():
    text = "\n".join([
        "FileNames", '1 "/r/tnl_jax/model/norms.py"', '2 "/r/tnl_jax/model/lrpe.py"', "",
        "FunctionNames", '1 "srms_norm"', '2 "apply_lrpe"', "",
        "FileLocations", "1 {file_name_id=1 function_name_id=1 line=1}",
        "2 {file_name_id=2 function_name_id=2 line=9}", "",
        "StackFrames", "1 {file_location_id=1 parent_frame_id=0}",
        "2 {file_location_id=2 parent_frame_id=0}", "",
        "%fused_computation (p: f32[2]) -> f32[2] {",
        "  %p = f32[2]{0} parameter(0), metadata={op_name=\"x\" stack_frame_id=2}",
        '  %a = f32[2]{0} multiply(%p, %p), metadata={op_name="jit(f)/mul" stack_frame_id=1}',
        '  %b = f32[2]{0} add(%a, %p), metadata={op_name="jit(f)/add" stack_frame_id=1}',
        '  ROOT %c = f32[2]{0} cosine(%b), metadata={op_name="jit(f)/cos" stack_frame_id=2}',
        "}", "",
        "ENTRY %main (x: f32[2]) -> f32[2] {",
        "  %x = f32[2]{0} parameter(0)",
        "  ROOT %loop_fusion = f32[2]{0} fusion(%x), kind=kLoop, calls=%fused_computation, "
        'metadata={op_name="jit(f)/cos" stack_frame_id=2}',
        "}"])
    sources = hlo_sources.instruction_sources(text)
    assert sources["loop_fusion"] == Source("norms.srms_norm", "forward")  # 2 of 3, not the root
    times = {"kernels": [("loop_fusion [loop_fusion]", 2.0, 1), ("memcpy", 0.5, 1),
                         ("loop_fusion [command_buffer_3]", 1.0, 1),
                         ("nvjet_sm90_tst_128x160_64x5_2x1_v_bz_NNT [command_buffer_3]", 0.1, 1)]}
    parts = hlo_sources.times_by_part(times, sources)
    assert parts == {Source("norms.srms_norm", "forward"): 3.0,
                     Source("(a library kernel: memcpy)", "?"): 0.5,
                     Source("(a library kernel: nvjet)", "?"): 0.1}
    assert hlo_sources.kernel_name_of("loop_add_fusion.4") == "loop_add_fusion_4"
    table = hlo_sources.format_parts(parts)
    assert "| norms.srms_norm | forward | 3.00 | 83.3% |" in table
