"""Launch types of the kernels (a leaf: imports nothing from the package).

A :class:`Launch` says how one walk runs (lowering, feature block, chunk, pipeline); a
:class:`KernelConfig` holds one per walk and, optionally, the sequence splits. Pass one
to ``lightning_attention(kernel_config=...)`` to bypass the tuned tables (tuning.py).
"""
from __future__ import annotations

import dataclasses

LOWERINGS = ("triton", "mosaic")
# The walks a KernelConfig names: the forward, dQ, dK and dV walks and the state-only
# passes of sequence splits.
WALKS = ("forward", "dq", "dk", "dv", "states")


@dataclasses.dataclass(frozen=True)
class Launch:
    """One walk's launch: the feature block each program owns (dv columns for the
    forward and dV walks, dk rows for the dQ and dK walks; 0: the whole head), Triton's
    warps and pipeline stages, and the chunk length ``C`` it walks in (a power of two:
    the intra-chunk attention tile). ``lowering="mosaic"`` runs the walk in Mosaic GPU
    (Hopper: wgmma, TMA; mosaic/) instead of Triton (triton/): there the block is the
    columns of a program, 64 per compute warpgroup, warps do not apply and stages are its
    TMA buffers."""

    block: int = 0
    num_warps: int = 4
    num_stages: int = 2
    chunk: int = 64
    lowering: str = "triton"

    def __post_init__(self):
        if self.lowering not in LOWERINGS:
            raise ValueError(f"lowering must be one of {LOWERINGS}, got {self.lowering!r}")


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """A launch per walk, and optionally the sequence splits (None: the split policy of
    tuning.py). Keyword fields; ``states`` None means the forward's launch."""

    forward: Launch
    dq: Launch
    dk: Launch
    dv: Launch
    # If set: dK and dV from one Triton walk over the whole state (small heads).
    fused_dkdv: Launch | None = None
    # The state-only passes of sequence splits (the forward's and the dS-only one).
    # They read two operands of three and write no rows.
    states: Launch | None = None
    # Chunks per output split, and state splits per output split (must divide it).
    chunks_per_split: int | None = None
    state_split_factor: int | None = None

    def __post_init__(self):
        if self.fused_dkdv and self.fused_dkdv.lowering != "triton":
            raise ValueError("the fused dK/dV walk has no Mosaic GPU lowering")
        # The decay gradient pairs the dQ and dK partial sums chunk by chunk (docs/DESIGN.md).
        key_chunk = (self.fused_dkdv or self.dk).chunk
        if self.dq.chunk != key_chunk:
            raise ValueError(f"the dQ and dK walks need one chunk length, got {self.dq.chunk} "
                             f"and {key_chunk}")
        for name in ("chunks_per_split", "state_split_factor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")

    @property
    def launches(self) -> tuple[Launch, ...]:
        return tuple(x for x in (self.forward, self.dq, self.dk, self.dv, self.fused_dkdv,
                                 self.states) if x)

    @property
    def chunk(self) -> int:
        """The longest chunk: rows are padded to whole chunks of it (and so of all)."""
        return max(launch.chunk for launch in self.launches)
