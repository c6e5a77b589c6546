"""Manual mesh axes: inside ``jax.shard_map`` (``check_vma=True``) every value carries
the mesh axes it varies along, and a ``pallas_call``'s outputs and a ``lax.scan``'s
carry must say theirs. jax 0.10 and 0.11 name that type ``manual_axis_type`` (an aval's
``mat`` in 0.10), earlier versions ``vma``; these helpers speak all of them. Outside ``shard_map`` every value varies along none
and nothing changes."""
from __future__ import annotations

import inspect
from typing import Sequence

import jax

try:  # jax >= 0.10
    from jax._src.core import ManualAxisType
except ImportError:  # pragma: no cover - earlier jax
    ManualAxisType = None

_STRUCT_KWARGS = inspect.signature(jax.ShapeDtypeStruct).parameters


def varying_axes(*xs) -> frozenset:
    """The manual mesh axes along which any of ``xs`` varies."""
    axes = frozenset()
    for x in xs:
        aval = jax.typeof(x)
        for name in ("mat", "manual_axis_type"):  # jax 0.10, 0.11
            kind = getattr(aval, name, None)
            if kind is not None and hasattr(kind, "varying"):
                axes |= frozenset(kind.varying)
                break
        else:  # earlier jax
            axes |= frozenset(getattr(aval, "vma", None) or ())
    return axes


def varying_like(x, *inputs):
    """``x`` cast to vary along every manual axis the inputs vary along (equal carry
    types in and out of a ``lax.scan`` inside ``shard_map``)."""
    missing = tuple(sorted(varying_axes(*inputs) - varying_axes(x)))
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def typed_like(structs: Sequence[jax.ShapeDtypeStruct],
               inputs: Sequence) -> list[jax.ShapeDtypeStruct]:
    """A kernel's output shapes, varying along the axes its inputs vary along."""
    axes = varying_axes(*(x for x in inputs if x is not None))
    if "manual_axis_type" in _STRUCT_KWARGS and ManualAxisType is not None:
        kwargs = dict(manual_axis_type=ManualAxisType(varying=axes))
    elif "vma" in _STRUCT_KWARGS:
        kwargs = dict(vma=axes)
    else:  # pragma: no cover - no manual-axis types in this jax
        kwargs = {}
    return [jax.ShapeDtypeStruct(s.shape, s.dtype, **kwargs) for s in structs]


def summed_like(cotangent, primal_axes: frozenset):
    """A custom VJP's cotangent summed over the manual axes along which it varies and
    its primal (varying along ``primal_axes``) does not: a replicated input's gradient
    is the sum over devices."""
    extra = tuple(sorted(varying_axes(cotangent) - primal_axes))
    return jax.lax.psum(cotangent, extra) if extra else cotangent
