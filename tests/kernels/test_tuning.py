"""The launch tables and their resolution, explicit kernel configs, and the split
policies (no kernels run)."""
from pallas_kernels import KernelConfig, Launch
from pallas_kernels.lightning import tuning
from pallas_kernels.lightning.mosaic import scratch


def test_state_passes_split_finer_to_fill_a_wave():
    """4 x 32K at d 128 (64 programs per split, 2 splits): the state-only passes cover one
    split, so they split it in two; 1 x 128K (16 programs, 8 splits): 112 programs, kept."""
    assert tuning.state_split_factor(256, 64, 2, "mosaic") == 2
    assert tuning.state_split_factor(256, 16, 8, "mosaic") == 1
    assert tuning.state_split_factor(8, 1, 2, "mosaic") == 2  # splits keep 4 chunks
    assert tuning.state_split_factor(512, 128, 1, "mosaic") == 1  # no state-only passes


def test_split_policy_fills_the_gpu_only_when_needed():
    """Many rows: one split; one long row: splits, a power of two in number."""
    for lowering, target in tuning.TARGET_PROGRAMS.items():
        assert tuning.split_chunks(n_chunks=128, programs_per_split=512, lowering=lowering) == 128
        per_split = tuning.split_chunks(n_chunks=2048, programs_per_split=32, lowering=lowering)
        assert 2048 % per_split == 0 and target <= (2048 // per_split) * 32 < 2 * target
        assert tuning.split_chunks(n_chunks=5, programs_per_split=1, lowering=lowering) >= 1
    # Mosaic GPU programs fill an SM: one wave of them, as measured (RESULTS.md).
    assert tuning.split_chunks(n_chunks=512, programs_per_split=64, lowering="mosaic") == 256


def test_configs_resolve_to_blocks_that_fit():
    """Block 0 is the whole head; float32 tiles are capped (shared memory), and the fused
    dK/dV walk, which holds the whole state, is dropped when the head exceeds the cap."""
    config = KernelConfig(forward=Launch(0, 4, 3, 32), dq=Launch(64, chunk=128), dk=Launch(128),
                          dv=Launch(0), fused_dkdv=Launch(0, 8, 1, 128))
    bf16 = tuning.resolve(config, 128, 128, itemsize=2)
    assert (bf16.forward.block, bf16.dq.block, bf16.dk.block, bf16.dv.block) == (128, 64, 128, 128)
    assert bf16.fused_dkdv == Launch(128, 8, 1, 128) and bf16.chunk == 128
    assert bf16.forward.chunk == 32 and bf16.dv.chunk == 64 and bf16.states == bf16.forward
    f32 = tuning.kernel_config(128, 128, chunk_size=16, itemsize=4)
    assert {f32.forward.block, f32.dq.block, f32.dk.block, f32.dv.block} == {
        tuning.FLOAT32_MAX_BLOCK}
    assert f32.fused_dkdv is None and {x.chunk for x in f32.launches} == {16}
    assert max(x.num_stages for x in f32.launches) <= tuning.FLOAT32_MAX_STAGES
    generic = tuning.kernel_config(32, 16, chunk_size=None)
    assert (generic.forward.block, generic.dq.block) == (16, 32)


def test_mosaic_launches_resolve_to_triton_where_wgmma_does_not_fit():
    """float32 inputs (wgmma has no exact float32), 32-wide heads (no Hopper row), buffers
    beyond shared memory and GPUs without wgmma keep the Triton row's launches."""
    hopper = tuning.kernel_config(128, 128, None, itemsize=2)
    assert {x.lowering for x in hopper.launches} == {"mosaic"} and hopper.fused_dkdv is None
    triton = tuning.kernel_config(128, 128, None, itemsize=2, mosaic=False)
    assert {x.lowering for x in triton.launches} == {"triton"}
    assert tuning.kernel_config(128, 128, None, itemsize=4) == tuning.kernel_config(
        128, 128, None, itemsize=4, mosaic=False)
    assert tuning.kernel_config(32, 32, None) == tuning.kernel_config(32, 32, None, mosaic=False)
    assert not scratch.fits(Launch(64, chunk=32, lowering="mosaic"), 32, 2)
    # As compiled on the H200: 2 stages of 128-column tiles at d 128 fit, 3 do not.
    two, three = (Launch(128, 4, stages, 64, lowering="mosaic") for stages in (2, 3))
    assert scratch.fits(two, 128, 2, decay_grad=True)
    assert not scratch.fits(three, 128, 2, decay_grad=False)
    # The decay gradient's hi/lo state at d 256 fits with one pipeline stage, not two:
    # the launch keeps the deepest pipeline that fits, from the tables or a config.
    fixed, learned = (tuning.kernel_config(256, 256, None, decay_grad=grad) for grad in (0, 1))
    assert (fixed.dq.num_stages, learned.dq.num_stages, learned.dk.num_stages) == (2, 1, 1)
    assert learned.dq.lowering == "mosaic" and learned.forward == fixed.forward
    assert tuning.resolve(fixed, 256, 256, decay_grad=True) == learned
