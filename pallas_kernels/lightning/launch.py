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
            raise ValueError(f"Launch.lowering must be one of {LOWERINGS}, got {self.lowering!r}")
        check_count("Launch.block", self.block, minimum=0)
        check_count("Launch.num_warps", self.num_warps, minimum=1, power_of_two=True)
        check_count("Launch.num_stages", self.num_stages, minimum=1)
        check_count("Launch.chunk", self.chunk, minimum=16, power_of_two=True)


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
        for name in ("forward", "dq", "dk", "dv", "fused_dkdv", "states"):
            value = getattr(self, name)
            optional = name in ("fused_dkdv", "states")
            if not isinstance(value, Launch) and not (optional and value is None):
                raise TypeError(f"KernelConfig.{name} must be a Launch"
                                f"{' or None' if optional else ''}, got {value!r}")
        if self.fused_dkdv and self.fused_dkdv.lowering != "triton":
            raise ValueError("the fused dK/dV walk has no Mosaic GPU lowering")
        # The decay gradient pairs the dQ and dK partial sums chunk by chunk (docs/DESIGN.md).
        key_chunk = (self.fused_dkdv or self.dk).chunk
        if self.dq.chunk != key_chunk:
            raise ValueError(f"the dQ and dK walks need one chunk length, got {self.dq.chunk} "
                             f"and {key_chunk}")
        for name in ("chunks_per_split", "state_split_factor"):
            if getattr(self, name) is not None:
                check_count(f"KernelConfig.{name}", getattr(self, name), minimum=1)

    @property
    def launches(self) -> tuple[Launch, ...]:
        return tuple(x for x in (self.forward, self.dq, self.dk, self.dv, self.fused_dkdv,
                                 self.states) if x)

    @property
    def chunk(self) -> int:
        """The longest chunk: rows are padded to whole chunks of it (and so of all)."""
        return max(launch.chunk for launch in self.launches)


def check_count(name: str, value, *, minimum: int, power_of_two: bool = False) -> None:
    """An int (not a bool) of at least ``minimum``, a power of two if asked."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < minimum or (power_of_two and value & (value - 1)):
        kind = "a power of two" if power_of_two else "an int"
        raise ValueError(f"{name} must be {kind} >= {minimum}, got {value}")
