"""Per-token cross entropy from the model's last hidden states, a chunk of tokens at a
time, so that the ``(tokens, vocab)`` float32 logits never exist whole.

At 32K tokens and a 64000-token vocabulary the logits are 8 GiB, and their gradient as
much again. Here each chunk's logits are made (the head's matmul, from the final norm's
output), reduced to the chunk's per-token loss and top-1 hit, and dropped;
``jax.checkpoint`` around the chunk makes the backward recompute them from the chunk's
normed hidden states instead of keeping them. Memory for the head falls to one chunk's logits (and their
gradient); the cost is the head's matmul once more in the backward. The per-token math
is today's (``optax.softmax_cross_entropy_with_integer_labels`` on float32 logits), so
the losses are the same and the gradients differ only by the order of the sums.

Chunks are cut along the sequence inside each device's piece of it: ``(B, T, d)`` is
viewed as ``(B, k, n, c, d)``, ``k`` the pieces the mesh cuts the sequence into
(``context``; 1 without a mesh), and ``lax.scan`` walks the ``n`` axis, so a chunk is
``c`` consecutive positions of every row in every piece: no device needs another's
tokens, and the rows stay split as before. Each device holds about ``chunk_tokens``
tokens of a chunk (at least one position of each of its rows); a sequence piece that
``n`` does not divide is padded, and the padding's losses are dropped.

The head's weight gradient (with a tied embedding, the embedding's) is reduced across
devices once per step, not once per chunk: each chunk multiplies its tokens by the
copy of the weight that belongs to their device (the weight broadcast over the
``(rows, pieces)`` shards of the tokens, each copy on its own device), so a chunk's
weight gradient stays on its device and is summed over the chunks there; the
broadcast's transpose after the loop sums the copies across devices, once. (Against a
weight closed over by the loop, XLA reduced each chunk's gradient across devices
inside it: for tnl-1b at DP=8, three extra reductions of 0.92 GB each step.) The cost:
each device holds the weight's whole gradient (in the weight's dtype, split only over
``tensor``), where FSDP held its share (tnl-7b at FSDP=8: about 1 GB more).

``loss_kernel`` (``LOSS_KERNELS``) picks how: ``chunked`` is the above; ``fused`` the
Pallas kernels of ``pallas_kernels.cross_entropy`` (GPU, one device), which make the
logits a tile at a time in registers and never write them; ``fused_xla_grads`` their
forward with the backward in XLA's products, ``DEFAULT_CHUNK_TOKENS`` tokens at a time
(``fused_interpret``: the Pallas kernels interpreted, on any platform, for tests);
``grads_in_forward`` the chunked loss's chunks with the gradient made in the forward
(``loss_grads_in_forward``: one head matmul per token fewer).
``auto`` (the default, ``resolve_kernel``) is the fastest measured: ``grads_in_forward``
on every platform and mesh.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from pallas_kernels.cross_entropy import CrossEntropyConfig, fused_cross_entropy
from tnl_jax.model.head_matmul import head_matmul
from tnl_jax.model.language_model import LOGITS
from tnl_jax.partitioning import ACTIVATION, constrain, require_one_device, shard_counts

AUTO = -1  # ``loss_chunk_tokens``: chunked only where the whole logits would be large.
UNCHUNKED = 0
DEFAULT_CHUNK_TOKENS = 4096  # On one device: 1 GiB of float32 logits at a 64000 vocabulary.
# AUTO keeps the plain loss up to this many logits per device (float32: 1 GiB), where
# the chunks' scan would save little and cost a loop.
AUTO_MAX_LOGITS = 2**28

# A chunk's tokens grouped by the devices holding them: (row shards, rows of one,
# sequence pieces, positions of one, d); the weight's copies: (row shards, pieces, V, d).
GROUP_TOKENS = ("batch", None, "seq", None, "act_embed")
GROUP_WEIGHTS = ("batch", "seq", "vocab", None)
# Hidden states (..., d) -> the head's operands: normed (..., d) and weight (V, d).
HeadFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
LOSS_KERNELS = ("auto", "chunked", "grads_in_forward", "fused", "fused_xla_grads",
                "fused_interpret")


def chunk_tokens_for(setting: int, local_tokens: int, vocab: int) -> int:
    """Tokens per chunk on each device for the ``loss_chunk_tokens`` setting (0:
    unchunked), given the tokens each device holds and the vocabulary size."""
    check_setting(setting)
    if setting == AUTO:
        return UNCHUNKED if local_tokens * vocab <= AUTO_MAX_LOGITS else DEFAULT_CHUNK_TOKENS
    return setting


def check_setting(setting: int) -> None:
    """A ``loss_chunk_tokens`` value, or a ``ValueError`` naming it (checked at start)."""
    if setting < AUTO:
        raise ValueError(f"loss_chunk_tokens={setting}: expected a number of tokens per chunk, "
                         f"0 (unchunked) or {AUTO} (chunked when the logits are large)")


def check_kernel(kernel: str) -> None:
    """A ``loss_kernel`` value, or a ``ValueError`` naming it (checked at start)."""
    if kernel not in LOSS_KERNELS:
        raise ValueError(f"loss_kernel={kernel!r}: expected one of {LOSS_KERNELS}")


def resolve_kernel(kernel: str) -> str:
    """The loss kernel a step runs: ``auto`` is ``grads_in_forward``, on any platform
    and mesh. On one H100 it made the step 1.043-1.046x ``fused_xla_grads``'s (tnl-385m,
    4 x 8K) and 1.060x (tnl-1b), each twice, and ``fused_xla_grads`` had been
    1.03x the chunked loss's (benchmarks/RESULTS.md); on a mesh it keeps the chunked
    loss's shards and collectives (tests/training/test_loss_collectives.py). Any other
    value is itself."""
    check_kernel(kernel)
    return "grads_in_forward" if kernel == "auto" else kernel


def fused_token_cross_entropy(head_fn: HeadFn, hidden: jax.Array, targets: jax.Array,
                              kernel: str = "fused") -> tuple[jax.Array, jax.Array]:
    """``cross_entropy``'s ``(losses, correct)`` from the fused kernels (``kernel``:
    ``fused`` or ``fused_xla_grads`` on a GPU, ``fused_interpret`` anywhere), on whole
    arrays: no mesh that splits anything (the kernels are opaque to XLA's partitioner,
    which would gather every operand), checked while tracing."""
    check_kernel(kernel)
    if kernel == "chunked":
        raise ValueError("fused_token_cross_entropy: loss_kernel='chunked' is cross_entropy's")
    if kernel != "fused_interpret" and jax.default_backend() != "gpu":
        raise ValueError(f"loss_kernel={kernel!r} runs Triton kernels on a GPU, and this "
                         f"platform is {jax.default_backend()!r}: use 'chunked' or "
                         "'fused_interpret'")
    require_one_device(f"loss_kernel={kernel!r}", "'chunked'")
    if hidden.ndim != 3 or targets.shape != hidden.shape[:2]:
        raise ValueError(f"hidden has shape {hidden.shape} and targets {targets.shape}: "
                         "expected (B, T, d) and (B, T)")
    h, weight = head_fn(hidden)
    config = CrossEntropyConfig(
        xla_grads_tokens=DEFAULT_CHUNK_TOKENS if kernel == "fused_xla_grads" else None)
    losses, correct = fused_cross_entropy(
        h.reshape(-1, h.shape[-1]), weight, targets.reshape(-1),
        backend="interpret" if kernel == "fused_interpret" else "pallas", config=config)
    return losses.reshape(targets.shape), correct.reshape(targets.shape)


def plain_cross_entropy(normed: jax.Array, weight: jax.Array,
                        targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(losses, correct)`` of ``targets``'s shape: the loss of every token and whether
    its top prediction was the target, from all logits at once (``cross_entropy``'s
    operands)."""
    logits = head_matmul("...d,vd->...v", normed, weight.astype(normed.dtype))
    if logits.ndim == len(LOGITS):
        logits = constrain(logits, LOGITS)
    return _token_losses(logits, targets)


def _token_losses(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return losses, jnp.argmax(logits, -1) == targets


@dataclasses.dataclass(frozen=True)
class TokenChunks:
    """How the loss cuts ``(B, T)`` tokens: ``count`` chunks of ``length`` consecutive
    positions of each of the ``pieces`` pieces of the sequence (padded at each piece's
    end); ``groups``: the ``(rows, pieces)`` shards of the tokens over the mesh."""
    batch: int
    seq: int
    groups: tuple[int, int]
    count: int
    length: int

    def split(self, x: jax.Array) -> jax.Array:
        """``(B, T, ...) -> (count, B, pieces * length, ...)``."""
        pieces, piece, rest = self.groups[1], self.seq // self.groups[1], x.shape[2:]
        x = x.reshape(self.batch, pieces, piece, *rest)
        x = jnp.pad(x, [(0, 0), (0, 0), (0, self.count * self.length - piece)]
                    + [(0, 0)] * len(rest))
        x = jnp.moveaxis(x.reshape(self.batch, pieces, self.count, self.length, *rest), 2, 0)
        return x.reshape(self.count, self.batch, pieces * self.length, *rest)

    def merge(self, x: jax.Array) -> jax.Array:
        """``(count, B, pieces * length, ...) -> (B, T, ...)``, the padding dropped."""
        pieces, piece, rest = self.groups[1], self.seq // self.groups[1], x.shape[3:]
        x = jnp.moveaxis(x.reshape(self.count, self.batch, pieces, self.length, *rest), 0, 2)
        x = x.reshape(self.batch, pieces, self.count * self.length, *rest)[:, :, :piece]
        return x.reshape(self.batch, self.seq, *rest)


def token_chunks(normed: jax.Array, weight: jax.Array, targets: jax.Array,
                 chunk_tokens: int = AUTO) -> TokenChunks:
    """The chunks of ``cross_entropy``'s tokens (one chunk: all at once), its operands
    checked."""
    if normed.ndim != 3 or targets.shape != normed.shape[:2]:
        raise ValueError(f"normed (the head's input) has shape {normed.shape} and targets "
                         f"{targets.shape}: expected (B, T, d) and (B, T)")
    if weight.ndim != 2 or weight.shape[1] != normed.shape[2]:
        raise ValueError(f"the head's weight has shape {weight.shape} and its input "
                         f"{normed.shape}: expected (V, {normed.shape[2]})")
    rows, pieces = shard_counts(ACTIVATION, normed.shape)[:2]
    batch, seq, _ = normed.shape
    local_rows, piece = batch // rows, seq // pieces
    chunk = chunk_tokens_for(chunk_tokens, local_rows * piece, weight.shape[0])
    count = 1 if chunk == UNCHUNKED else min(math.ceil(local_rows * piece / chunk), piece)
    length = math.ceil(piece / count)  # Positions of a piece per chunk.
    count = math.ceil(piece / length)  # No chunk of padding alone.
    return TokenChunks(batch, seq, (rows, pieces), count, length)


def cross_entropy(normed: jax.Array, weight: jax.Array, targets: jax.Array,
                  chunk_tokens: int = AUTO) -> tuple[jax.Array, jax.Array]:
    """``(losses (B, T) float32, correct (B, T) bool)`` of the logits ``normed @
    weight.T`` (float32) for the head's input ``normed (B, T, d)`` (the final norm's
    output, in the compute dtype), its weight ``weight (V, d)`` (any dtype: cast to
    ``normed``'s where it is used, so that its gradient is summed in its own) and
    integer ``targets (B, T)``. ``chunk_tokens``: tokens per chunk on each device, 0
    for all at once, ``AUTO`` (-1) for ``DEFAULT_CHUNK_TOKENS`` when a device's logits
    would pass ``AUTO_MAX_LOGITS``."""
    chunks = token_chunks(normed, weight, targets, chunk_tokens)
    if chunks.count == 1:
        return plain_cross_entropy(normed, weight, targets)
    return _scanned(normed, weight, targets, chunks)


def _scanned(normed: jax.Array, weight: jax.Array, targets: jax.Array,
             chunks: TokenChunks) -> tuple[jax.Array, jax.Array]:
    """``cross_entropy`` as ``chunks.count`` rematerialised chunks."""
    rows, pieces = chunks.groups
    batch, length = targets.shape[0], chunks.length
    # One copy of the weight per group of tokens (each device's own): the chunks' weight
    # gradients are then summed on each device, and reduced across devices once, by the
    # broadcast's transpose after the loop (not once per chunk).
    weights = constrain(jnp.broadcast_to(weight, (rows, pieces, *weight.shape)), GROUP_WEIGHTS)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def chunk(h, t):  # (B, pieces * length, d), (B, pieces * length)
        h = constrain(h.reshape(rows, batch // rows, pieces, length, -1), GROUP_TOKENS)
        logits = head_matmul("rbpld,rpvd->rbplv", h, weights.astype(h.dtype))
        logits = constrain(logits, (*GROUP_TOKENS[:-1], "vocab"))
        losses, correct = _token_losses(logits, t.reshape(logits.shape[:-1]))
        return losses.reshape(t.shape), correct.reshape(t.shape)

    hs = constrain(chunks.split(normed), (None, *ACTIVATION))
    ts = constrain(chunks.split(targets), (None, *ACTIVATION[:2]))
    _, (losses, correct) = jax.lax.scan(lambda _, xs: (None, chunk(*xs)), None, (hs, ts))
    return chunks.merge(losses), chunks.merge(correct)
