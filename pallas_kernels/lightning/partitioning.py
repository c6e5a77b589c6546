"""The op over a mesh: each device computes only its shard, in every sharding mode.

A Pallas call is opaque to XLA's partitioner, which would gather every operand onto
every device. So the op partitions itself, by the sharding of ``q``:

- ``Explicit`` mesh axes (sharding in types): the sharding is known while tracing; the
  op runs in a ``jax.shard_map`` over those axes (``shard_mapped``).
- ``Auto`` mesh axes (plain ``jax.jit``): the sharding is known only to the partitioner;
  the forward and the backward are each a ``custom_partitioning`` call whose partition
  rule runs the op on the local shards (``auto_partitioned``).
- Inside the caller's ``shard_map``: the arguments are shards already; the caller names
  the axis that splits the sequence (``context_axis``).

Batch and heads split freely; a split sequence is context parallelism
(context_parallel.py); the head dims are never split (gathered first). The only
collectives are state-sized: the context gather and, when the decay is trained, a
``psum`` of its ``(H,)`` gradient over the batch and sequence axes.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from pallas_kernels.lightning import context_parallel
from pallas_kernels.lightning.context_parallel import LocalOp
from pallas_kernels.lightning.manual_axes import varying_axes


def _axes(entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _entry(axes: tuple[str, ...]):
    return None if not axes else axes[0] if len(axes) == 1 else axes


@dataclasses.dataclass(frozen=True)
class ShardAxes:
    """The mesh axes that split the op's batch, sequence and head dimensions: each a
    mesh axis name, a tuple of them, or None/() for none."""
    batch: tuple[str, ...] = ()
    seq: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()

    def __post_init__(self):
        for field in ("batch", "seq", "heads"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, (str, tuple, list)) or (
                    isinstance(value, (tuple, list))
                    and not all(isinstance(a, str) for a in value)):
                raise TypeError(f"ShardAxes.{field} must be a mesh axis name, a tuple of "
                                f"them or None, got {value!r}")
            object.__setattr__(self, field, _axes(value))

    @classmethod
    def of(cls, spec, keep=lambda axis: True) -> ShardAxes:
        """The axes of ``q``'s ``(batch, seq, heads, dk)`` spec (those ``keep`` accepts)."""
        entries = (tuple(spec) + (None,) * 4)[:3]
        batch, seq, heads = (tuple(a for a in _axes(e) if keep(a)) for e in entries)
        return cls(batch, seq, heads)

    def __bool__(self) -> bool:
        return bool(self.batch or self.seq or self.heads)

    def specs(self, has_segments: bool, has_state: bool):
        """``(argument specs, output specs)`` of ``(q, k, v, decay, [segment_ids],
        [initial_state])`` and ``(o, final_state)``."""
        b, t, h = _entry(self.batch), _entry(self.seq), _entry(self.heads)
        tokens, state = P(b, t, h, None), P(b, h, None, None)
        args = [tokens, tokens, tokens, P(h)]
        args += [P(b, t)] * has_segments + [state] * has_state
        return tuple(args), (tokens, state)


def _present(*optional):
    return tuple(x for x in optional if x is not None)


def _unpack(optional, has_segments: bool, has_state: bool):
    optional = list(optional)
    segments = optional.pop(0) if has_segments else None
    state = optional.pop(0) if has_state else None
    return segments, state


def local_attention(attend: LocalOp, axes: ShardAxes, q, k, v, decay, segment_ids,
                    initial_state):
    """The op on one device's shards (inside shard_map or a partition rule)."""
    if axes.seq:
        return context_parallel.attention_over_context(attend, q, k, v, decay, segment_ids,
                                                       initial_state, axes.seq)
    return attend(q, k, v, decay, segment_ids, initial_state)


def shard_mapped(attend: LocalOp, mesh, axes: ShardAxes, q, k, v, decay, segment_ids,
                 initial_state, *, typed: bool = True):
    """``(o, final_state)`` with the op in a ``jax.shard_map`` over ``mesh``.

    ``typed``: with shard_map's manual-axis types (``check_vma``), so that along the
    axes that split nothing every device computes alike and nothing is summed. jax
    0.10's Pallas interpreter cannot run kernels on those types: the ``interpret``
    backend goes untyped (still exact, but its gradients are summed over the unused
    axes)."""
    has_segments, has_state = segment_ids is not None, initial_state is not None
    in_specs, out_specs = axes.specs(has_segments, has_state)

    def local(q, k, v, decay, *optional):
        return local_attention(attend, axes, q, k, v, decay,
                               *_unpack(optional, has_segments, has_state))
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=typed)(q, k, v, decay, *_present(segment_ids, initial_state))


def explicit_sharding(q):
    """``(mesh, ShardAxes)`` when ``q`` is split over ``Explicit`` mesh axes, else None."""
    try:
        sharding = jax.typeof(q).sharding
    except TypeError:
        return None
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return None
    explicit = {name for name, kind in zip(mesh.axis_names, mesh.axis_types)
                if kind == jax.sharding.AxisType.Explicit}
    axes = ShardAxes.of(sharding.spec, keep=lambda axis: axis in explicit)
    return (mesh, axes) if axes else None


def partitioned(attend: LocalOp, q, k, v, decay, segment_ids, initial_state, *,
                typed: bool = True):
    """``(o, final_state)`` computed shard by shard, whatever the mesh mode."""
    explicit = explicit_sharding(q)
    if explicit is not None:
        mesh, axes = explicit
        return _resharded_shard_map(attend, mesh, axes, q, k, v, decay, segment_ids,
                                    initial_state, jax.sharding.reshard, typed)
    if (jax.device_count() == 1 or _inside_shard_map(q)
            or _vmapped(q, k, v, decay, segment_ids, initial_state)):
        return attend(q, k, v, decay, segment_ids, initial_state)
    return auto_partitioned(attend, q, k, v, decay, segment_ids, initial_state)


def _inside_shard_map(q) -> bool:
    """Whether the op runs inside a ``shard_map``: its arguments are shards already."""
    return bool(varying_axes(q)) or bool(getattr(jax.sharding.get_abstract_mesh(),
                                                 "manual_axes", ()))


def _vmapped(*xs) -> bool:
    """Whether any input is traced by ``vmap``, which ``custom_partitioning`` does not
    support (jax 0.10): under ``vmap`` with ``Auto`` axes XLA partitions the op as it
    can; pass ``shard_axes`` (or call it in ``shard_map``) to split it explicitly."""
    return any(isinstance(x, jax.core.Tracer) and hasattr(x, "batch_dim") for x in xs)


def with_axes(attend: LocalOp, axes: ShardAxes, q, k, v, decay, segment_ids, initial_state,
              *, typed: bool = True):
    """``(o, final_state)`` in a ``shard_map`` over the given axes of the current mesh
    (checked: validation.check_shard_args)."""
    mesh = jax.sharding.get_abstract_mesh()
    if not axes:
        return attend(q, k, v, decay, segment_ids, initial_state)

    def constrain(x, spec):  # traced values; shard_map places concrete ones itself
        if not isinstance(x, jax.core.Tracer):
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
    return _resharded_shard_map(attend, mesh, axes, q, k, v, decay, segment_ids,
                                initial_state, constrain, typed)


def _resharded_shard_map(attend, mesh, axes, q, k, v, decay, segment_ids, initial_state,
                         reshard, typed: bool):
    has_segments, has_state = segment_ids is not None, initial_state is not None
    in_specs, _ = axes.specs(has_segments, has_state)
    args = [reshard(x, spec) for x, spec in zip(
        (q, k, v, decay, *_present(segment_ids, initial_state)), in_specs)]
    return shard_mapped(attend, mesh, axes, *args[:4],
                        *_unpack(args[4:], has_segments, has_state), typed=typed)


# ---- Auto axes: custom_partitioning of the forward and of the backward ----------------

_TOKENS = "b t h d, b t h d, b t h e, h"


def _rule(has_segments: bool, has_state: bool, backward: bool) -> str:
    operands = _TOKENS + ", b t" * has_segments + ", b h d e" * has_state
    if not backward:
        return f"{operands} -> b t h e, b h d e"
    return f"{operands}, b t h e, b h d e -> {_TOKENS}" + ", b h d e" * has_state


def _partitioned_call(local_fn, reference_fn, has_segments: bool, has_state: bool,
                      backward: bool):
    """A ``custom_partitioning`` of ``reference_fn`` (the whole-array computation) whose
    partition rule runs ``local_fn(axes)`` on the shards, split like ``q``."""
    call = custom_partitioning(reference_fn)

    def partition(mesh, arg_shapes, result_shape):
        sharding = arg_shapes[0].sharding
        if not isinstance(sharding, NamedSharding):
            raise ValueError("lightning_attention under jax.jit with sharded inputs needs "
                             "the mesh: call it inside `with jax.set_mesh(mesh):`")
        axes = ShardAxes.of(sharding.spec)
        arg_specs, (tokens, state) = axes.specs(has_segments, has_state)
        out_specs = (tokens, state)
        if backward:
            arg_specs += (tokens, state)
            out_specs = arg_specs[:4] + (state,) * has_state
        named = lambda specs: tuple(NamedSharding(mesh, s) for s in specs)
        return mesh, local_fn(axes), named(out_specs), named(arg_specs)

    call.def_partition(partition=partition, sharding_rule=_rule(has_segments, has_state,
                                                                  backward),
                       need_replication_factors=("d", "e"))
    return call


def auto_partitioned(attend: LocalOp, q, k, v, decay, segment_ids, initial_state):
    """``(o, final_state)`` as one ``custom_partitioning`` call per direction."""
    flags = (segment_ids is not None, initial_state is not None)
    return _auto(attend, flags, q, k, v, decay, _present(segment_ids, initial_state))


def _reference(attend, flags, q, k, v, decay, *optional):
    return attend(q, k, v, decay, *_unpack(optional, *flags))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _auto(attend, flags, q, k, v, decay, optional):
    return _forward_call(attend, flags)(q, k, v, decay, *optional)


def _forward_call(attend, flags):
    def local_fn(axes):
        return lambda q, k, v, decay, *optional: local_attention(
            attend, axes, q, k, v, decay, *_unpack(optional, *flags))
    return _partitioned_call(local_fn, functools.partial(_reference, attend, flags), *flags,
                             backward=False)


def _auto_fwd(attend, flags, q, k, v, decay, optional):
    primals = [x.value for x in (q, k, v, decay)]
    optional_values = tuple(x.value for x in optional)
    out = _forward_call(attend, flags)(*primals, *optional_values)
    grads = (decay.perturbed, flags[1] and optional[-1].perturbed)
    return out, (tuple(primals), optional_values, grads)


def _auto_bwd(attend, flags, residuals, cotangents):
    primals, optional, (decay_grad, state_grad) = residuals
    do, dfinal = (jnp.zeros(c.aval.shape, c.aval.dtype)
                  if isinstance(c, jax.custom_derivatives.SymbolicZero) else c
                  for c in cotangents)
    grads = _backward_call(attend, flags, decay_grad, state_grad)(
        *primals, *optional, do.astype(primals[0].dtype), dfinal)
    dq, dk, dv, ddecay, *ds0 = grads
    d_optional = (None,) * flags[0] + ((ds0[0] if state_grad else None),) * flags[1]
    return dq, dk, dv, ddecay if decay_grad else None, d_optional


_auto.defvjp(_auto_fwd, _auto_bwd, symbolic_zeros=True)


def local_backward(attend: LocalOp, axes: ShardAxes, flags, decay_grad: bool, q, k, v,
                   decay, *rest):
    """The backward on one device's shards: ``(dq, dk, dv, d decay, [d initial_state])``,
    the decay's summed over the batch and sequence axes (zeros if not ``decay_grad``)."""
    *optional, do, dfinal = rest
    segment_ids, initial_state = _unpack(optional, *flags)
    if axes.seq:
        dq, dk, dv, ddecay, ds0 = context_parallel.backward_over_context(
            attend, q, k, v, decay, segment_ids, initial_state, do, dfinal, axes.seq,
            decay_grad=decay_grad)
    else:
        def own(q, k, v, s0, *trained_decay):
            return attend(q, k, v, trained_decay[0] if decay_grad else decay, segment_ids, s0)
        _, vjp = jax.vjp(own, q, k, v, initial_state, *((decay,) if decay_grad else ()))
        dq, dk, dv, ds0, *ddecay = vjp((do, dfinal))
        ddecay = ddecay[0] if decay_grad else None
    if decay_grad and axes.batch + axes.seq:
        ddecay = lax.psum(ddecay, axes.batch + axes.seq)
    elif not decay_grad:
        ddecay = jnp.zeros_like(decay)
    return (dq, dk, dv, ddecay) + ((ds0,) if flags[1] else ())


def _backward_call(attend, flags, decay_grad: bool, state_grad: bool):
    def local_fn(axes):
        return functools.partial(local_backward, attend, axes, flags, decay_grad)

    def reference_fn(q, k, v, decay, *rest):
        return local_backward(attend, ShardAxes(), flags, decay_grad, q, k, v, decay, *rest)
    return _partitioned_call(local_fn, reference_fn, *flags, backward=True)
