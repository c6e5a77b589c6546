"""The Pallas (Triton) kernels of SRMSNorm, ``y = x · rstd``, ``rstd = rsqrt(mean(x²) +
eps)`` per row, and of its gated form ``z = srms_norm(o) · u`` (TNL's token mixer
output). Each program takes a ``(block_rows, width)`` block of rows, the whole width
at once, and does its math in float32 in registers:

- ``norm_forward``: reads ``x``, writes ``y`` (and, for the backward, ``rstd``,
  float32 per row): one read and one write of the rows, where XLA's norm makes
  several passes.
- ``norm_backward``: reads ``x``, ``rstd`` and ``dy``, writes ``dx = rstd · (dy - y ·
  mean(dy · y))`` with ``y = x · rstd`` made again in float32.
- ``gate_forward``: reads ``o`` and ``u``, writes ``z`` (and ``rstd``).
- ``gate_backward``: reads ``o``, ``u``, ``rstd`` and ``dz``, writes ``du = dz · n`` and
  ``do`` (the norm's backward of ``dn = dz · u``), ``n = o · rstd``.

Operands are ``(rows, width)``, ``width`` a power of two (Triton's blocks must be)
of at most ``MAX_WIDTH``. The grid covers the rows in ``cdiv(rows, block_rows)``
programs; when ``block_rows`` does not divide ``rows`` the loads and stores are
masked by row (rows past the end read 0 and are not written), so a ragged row count
costs no padded copy.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

# A block of this many elements: at a bfloat16 width of 1024, 8 rows, 16 KiB read per
# operand and 32 KiB of float32 held (over 8 warps: 32 values a thread per operand).
# Enough rows that each program moves a useful amount; few enough that the backward's
# four or five float32 blocks stay in registers.
BLOCK_ELEMENTS = 8192
MAX_WIDTH = 8192  # One row in a block: its float32 copies still fit in registers.


@dataclasses.dataclass(frozen=True)
class NormConfig:
    """The launch; ``None`` takes ``block_rows_for`` / ``num_warps_for``."""
    block_rows: int | None = None  # Rows per program, a power of two.
    num_warps: int | None = None

    def __post_init__(self):
        for field in ("block_rows", "num_warps"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1 or value & (value - 1)):
                raise ValueError(f"NormConfig.{field}={value!r}: expected None or a power "
                                 "of two >= 1")


def block_rows_for(width: int, rows: int) -> int:
    """``BLOCK_ELEMENTS // width`` rows (a block of ~16 KiB of bfloat16 at any width),
    at least one, and no more than ``rows`` rounded up to a power of two (a handful
    of decode rows gets one small block)."""
    return max(1, min(BLOCK_ELEMENTS // width, pl.next_power_of_2(rows)))


def num_warps_for(elements: int) -> int:
    """Triton's heuristic for a row of ``elements`` (one warp per 256, 1 to 8)."""
    return min(8, max(1, elements // 256))


@dataclasses.dataclass(frozen=True)
class Launch:
    """The static facts of one call: rows (the real count), block and warps, ``eps``,
    interpreted or not."""
    rows: int
    width: int
    block_rows: int
    num_warps: int
    eps: float
    interpret: bool

    @classmethod
    def of(cls, rows: int, width: int, eps: float, interpret: bool,
           config: NormConfig) -> "Launch":
        block = config.block_rows or block_rows_for(width, rows)
        warps = config.num_warps or num_warps_for(block * width)
        return cls(rows, width, block, warps, float(eps), interpret)

    @property
    def ragged(self) -> bool:
        return self.rows % self.block_rows != 0


def _masks(launch: Launch):
    """``(block mask (block_rows, width), row mask (block_rows,))`` of the rows that
    exist, or ``(None, None)`` when every block is whole."""
    if not launch.ragged:
        return None, None
    first = pl.program_id(0) * launch.block_rows
    shape = (launch.block_rows, launch.width)
    block = first + jax.lax.broadcasted_iota(jnp.int32, shape, 0) < launch.rows
    row = first + jax.lax.broadcasted_iota(jnp.int32, (launch.block_rows,), 0) < launch.rows
    return block, row


def _load(ref, mask) -> jax.Array:
    """The block in float32; masked rows read 0."""
    value = ref[...] if mask is None else plt.load(ref, mask=mask, other=0.0)
    return value.astype(jnp.float32)


def _store(ref, value: jax.Array, mask) -> None:
    value = value.astype(ref.dtype)
    if mask is None:
        ref[...] = value
    else:
        plt.store(ref, value, mask=mask)


def _rstd(x: jax.Array, eps: float) -> jax.Array:
    """``(rows,)`` ``rsqrt(mean(x²) + eps)`` of float32 ``x (rows, width)``."""
    return jax.lax.rsqrt(jnp.sum(x * x, axis=1) * (1.0 / x.shape[1]) + eps)


def _norm_grad(y: jax.Array, rstd: jax.Array, dy: jax.Array) -> jax.Array:
    """``dx`` of ``y = x · rstd(x)`` for ``dy``: ``rstd · (dy - y · mean(dy · y))``;
    ``rstd (rows, 1)``."""
    mean_dy_y = jnp.sum(dy * y, axis=1) * (1.0 / y.shape[1])
    return rstd * (dy - y * mean_dy_y[:, None])


def _norm_forward_kernel(x_ref, y_ref, *rstd_ref, launch: Launch):
    mask, row_mask = _masks(launch)
    x = _load(x_ref, mask)
    rstd = _rstd(x, launch.eps)
    _store(y_ref, x * rstd[:, None], mask)
    if rstd_ref:
        _store(rstd_ref[0], rstd, row_mask)


def _norm_backward_kernel(x_ref, rstd_ref, dy_ref, dx_ref, *, launch: Launch):
    mask, row_mask = _masks(launch)
    rstd = _load(rstd_ref, row_mask)[:, None]
    y = _load(x_ref, mask) * rstd
    _store(dx_ref, _norm_grad(y, rstd, _load(dy_ref, mask)), mask)


def _gate_forward_kernel(o_ref, u_ref, z_ref, *rstd_ref, launch: Launch):
    mask, row_mask = _masks(launch)
    o = _load(o_ref, mask)
    rstd = _rstd(o, launch.eps)
    _store(z_ref, o * rstd[:, None] * _load(u_ref, mask), mask)
    if rstd_ref:
        _store(rstd_ref[0], rstd, row_mask)


def _gate_backward_kernel(o_ref, u_ref, rstd_ref, dz_ref, do_ref, du_ref, *, launch: Launch):
    mask, row_mask = _masks(launch)
    rstd = _load(rstd_ref, row_mask)[:, None]
    n = _load(o_ref, mask) * rstd
    dz = _load(dz_ref, mask)
    _store(du_ref, dz * n, mask)
    _store(do_ref, _norm_grad(n, rstd, dz * _load(u_ref, mask)), mask)


def _call(kernel, launch: Launch, inputs: tuple[str, ...], outputs: tuple[tuple[str, object], ...],
          name: str):
    """``pallas_call`` over the row blocks; ``inputs`` and ``outputs`` say per operand
    ``"rows"`` (``(rows, width)``) or ``"values"`` (``(rows,)``), outputs with their
    dtype. The Triton compiler parameters are given explicitly (on jax 0.10 ``None``
    would lower through Mosaic GPU)."""
    block = launch.block_rows
    specs = {"rows": pl.BlockSpec((block, launch.width), lambda i: (i, 0)),
             "values": pl.BlockSpec((block,), lambda i: (i,))}
    shapes = {"rows": (launch.rows, launch.width), "values": (launch.rows,)}
    return pl.pallas_call(
        functools.partial(kernel, launch=launch), grid=(pl.cdiv(launch.rows, block),),
        in_specs=[specs[kind] for kind in inputs],
        out_specs=[specs[kind] for kind, _ in outputs],
        out_shape=[jax.ShapeDtypeStruct(shapes[kind], dtype) for kind, dtype in outputs],
        interpret=launch.interpret, name=name,
        compiler_params=plt.CompilerParams(num_warps=launch.num_warps, num_stages=1))


def norm_forward(x: jax.Array, launch: Launch, with_rstd: bool) -> list[jax.Array]:
    """``[y]`` in ``x.dtype``, or ``[y, rstd (rows,) float32]``."""
    outputs = (("rows", x.dtype),) + ((("values", jnp.float32),) if with_rstd else ())
    return _call(_norm_forward_kernel, launch, ("rows",), outputs, "srms_norm_fwd")(x)


def norm_backward(x: jax.Array, rstd: jax.Array, dy: jax.Array, launch: Launch) -> jax.Array:
    """``dx`` in ``x.dtype``."""
    return _call(_norm_backward_kernel, launch, ("rows", "values", "rows"),
                 (("rows", x.dtype),), "srms_norm_bwd")(x, rstd, dy)[0]


def gate_forward(o: jax.Array, u: jax.Array, launch: Launch,
                 with_rstd: bool) -> list[jax.Array]:
    """``[z]`` in ``o.dtype``, or ``[z, rstd (rows,) float32]`` (of ``o``)."""
    outputs = (("rows", o.dtype),) + ((("values", jnp.float32),) if with_rstd else ())
    return _call(_gate_forward_kernel, launch, ("rows", "rows"), outputs,
                 "srms_norm_gate_fwd")(o, u)


def gate_backward(o: jax.Array, u: jax.Array, rstd: jax.Array, dz: jax.Array,
                  launch: Launch) -> tuple[jax.Array, jax.Array]:
    """``(do, du)`` in ``o.dtype``."""
    do, du = _call(_gate_backward_kernel, launch, ("rows", "rows", "values", "rows"),
                   (("rows", o.dtype), ("rows", o.dtype)), "srms_norm_gate_bwd")(o, u, rstd, dz)
    return do, du
