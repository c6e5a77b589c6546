"""Range checks of every ``ModelConfig`` field, in one place.

A config comes from a preset, a ``key=value`` override, a saved run or a published
``config.json``; a bad number there would otherwise surface as a shape error deep
inside tracing, or not at all (a pad id past the vocabulary is silently not zeroed).
``problems(fields)`` lists every problem as ``key=value: expected ...``; ``ModelConfig``
raises them together in one ``ValueError``.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from pallas_kernels import BACKENDS
from pallas_kernels.norms import MAX_WIDTH as NORM_KERNEL_MAX_WIDTH
from tnl_jax.config_keys import nearest
from tnl_jax.model.fp8 import PROJECTION_DTYPES
from tnl_jax.model.norms import NORM_KERNELS
from tnl_jax.model.remat import REMAT_POLICIES
from tnl_jax.range_checks import INT32_MAX, boolean, integer, is_int, number, one_of

ARCHITECTURES = ("tnl", "softmax", "hybrid", "llama")
ATTENTION_BACKENDS = (None, *BACKENDS)  # None: the op picks (pallas on GPU, xla elsewhere).
ACTIVATIONS = ("silu", "swish")  # The published code's two names of x * sigmoid(x).
NORMS = ("simplermsnorm",)


def token_id(key: str, value: Any, vocab: Any) -> list[str]:
    """``None`` (no such token) or an id of the vocabulary."""
    vocab_known = is_int(vocab) and vocab >= 1  # Else vocab_size has its own problem.
    if value is None or (is_int(value) and 0 <= value and (not vocab_known or value < vocab)):
        return []
    return [f"{key}={value!r}: expected null or a token id in [0, vocab_size={vocab!r})"]


def float_dtype(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            if jnp.issubdtype(jnp.dtype(value), jnp.floating):
                return []
        except TypeError:
            pass
    return [f"{key}={value!r}: expected the name of a floating-point dtype "
            "('float32', 'bfloat16', 'float16')"]


def needs_x64(key: str, value: Any) -> list[str]:
    """``[]`` unless ``value`` is float64 while jax's 64-bit mode is off: then jax would
    make float32 arrays under a config that says float64."""
    if jnp.dtype(value) != jnp.float64 or jax.config.jax_enable_x64:
        return []
    return [f"{key}='float64' needs 64-bit jax (JAX_ENABLE_X64=1 in the environment), else "
            "the weights would be float32: expected float32, bfloat16 or float16, or set "
            "JAX_ENABLE_X64=1"]


def lrpe_list(value: Any, layers: Any) -> list[str]:
    """``None`` (LRPE on layer 0), ``[]`` (nowhere) or one 0/1 per layer."""
    if value is None:
        return []
    key = "linear_use_lrpe_list"
    flags = isinstance(value, (list, tuple)) and all(
        (is_int(x) or isinstance(x, bool)) and x in (0, 1) for x in value)
    if not flags:
        return [f"{key}={value!r}: expected null or a list of 0/1, one per layer"]
    if len(value) not in (0, layers):
        return [f"{key}={list(value)!r}: has {len(value)} entries for decoder_layers={layers!r} "
                "(expected one 0/1 per layer, or [] for no LRPE)"]
    return []


def chunk_size(value: Any) -> list[str]:
    if value is None or (is_int(value) and value >= 16 and not value & (value - 1)):
        return []
    return [f"chunk_size={value!r}: expected null (the op's choice) or a power of two >= 16"]


def remat(value: Any) -> list[str]:
    if isinstance(value, str) and value in REMAT_POLICIES:
        return []
    return [f"remat={value!r} is not a remat policy (nearest: "
            f"{nearest(str(value), REMAT_POLICIES)!r}; expected one of "
            f"{tuple(REMAT_POLICIES)}; see tnl_jax/model/remat.py)"]


def shape_problems(cfg: Mapping[str, Any]) -> list[str]:
    """The sizes: each positive, the heads dividing the width, the published widths."""
    d, heads, layers = (cfg[key] for key in ("decoder_embed_dim", "decoder_attention_heads",
                                             "decoder_layers"))
    hidden, glu, vocab = cfg["hidden_dim"], cfg["glu_dim"], cfg["vocab_size"]
    width = [*integer("decoder_embed_dim", d, 1, " (the model width)"),
             *integer("decoder_attention_heads", heads, 1)]
    found = [*integer("vocab_size", vocab, 1, " (token ids are int32)", INT32_MAX), *width, *integer("decoder_layers", layers, 1)]
    if not width and d % heads:
        found.append(f"decoder_embed_dim={d} is not divisible by decoder_attention_heads={heads}")
    if hidden is not None and hidden != d:
        found.append(f"hidden_dim={hidden!r}: expected null or decoder_embed_dim={d!r} "
                     "(they are equal in every published checkpoint)")
    if not (glu == -1 or integer("glu_dim", glu, 1) == []):
        found.append(f"glu_dim={glu!r}: expected an integer >= 1, or -1 for decoder_embed_dim")
    found += lrpe_list(cfg["linear_use_lrpe_list"], layers)
    found += [problem for key in ("pad_token_id", "bos_token_id", "eos_token_id")
              for problem in token_id(key, cfg[key], vocab)]
    return found


def softmax_offset(offset: Any, every: Any) -> list[str]:
    """The hybrid's softmax place inside each group of ``every`` layers: ``-every`` to
    ``every - 1`` (negative counts from the group's end)."""
    if not (is_int(every) and every >= 1):
        return []  # softmax_every's own check speaks.
    if is_int(offset) and -every <= offset < every:
        return []
    return [f"softmax_offset={offset!r}: expected an integer from {-every} to {every - 1} "
            f"(the softmax layer's place in each group of softmax_every={every}; -1 the last)"]


def norm_kernel(cfg: Mapping[str, Any]) -> list[str]:
    """One of ``NORM_KERNELS``; ``pallas`` only where its kernels serve every SRMSNorm:
    a power-of-two width that one Triton block holds, and SRMSNorm itself (not the
    LLaMA-style RMSNorm with a gain). Refused here rather than run on XLA instead."""
    value, d = cfg["norm_kernel"], cfg["decoder_embed_dim"]
    found = one_of("norm_kernel", value, NORM_KERNELS, " (how SRMSNorm runs)")
    if found or value != "pallas":
        return found
    if is_int(d) and d >= 1 and (d & (d - 1) or d > NORM_KERNEL_MAX_WIDTH):
        found.append(f"norm_kernel='pallas' with decoder_embed_dim={d}: its kernels take a "
                     f"row in one block, expected a power-of-two width <= "
                     f"{NORM_KERNEL_MAX_WIDTH} (or norm_kernel='xla')")
    if cfg["architecture"] == "llama":
        found.append("norm_kernel='pallas' with architecture='llama': the kernels are "
                     "SRMSNorm's and llama's norms have a gain (expected norm_kernel='xla')")
    return found


def problems(cfg: Mapping[str, Any]) -> list[str]:
    """Every problem of ``cfg`` (``ModelConfig``'s fields by name), each naming its key,
    its value and what is allowed."""
    found = shape_problems(cfg)
    found += one_of("linear_act_fun", cfg["linear_act_fun"], ACTIVATIONS,
                    " (TNL's q/k activation; the only one supported)")
    found += one_of("norm_type", cfg["norm_type"], NORMS, " (the only norm supported)")
    for key in ("no_scale_embedding", "bias", "tie_word_embeddings", "use_decay",
                "decay_learnable"):
        found += boolean(key, cfg[key])
    if cfg["bias"] is True:
        found.append("bias=True: not supported (every published TNL is bias-free)")
    found += number("init_std", cfg["init_std"], 0, low_open=True, meaning=" (the weights' initial std)")
    found += one_of("architecture", cfg["architecture"], ARCHITECTURES)
    found += integer("softmax_every", cfg["softmax_every"], 1, " (hybrid: every n-th layer is "
                     "softmax attention)")
    found += softmax_offset(cfg["softmax_offset"], cfg["softmax_every"])
    found += number("rope_theta", cfg["rope_theta"], 0, low_open=True)
    found += one_of("attention_backend", cfg["attention_backend"], ATTENTION_BACKENDS,
                    " (null: pallas on GPU, xla elsewhere)")
    found += chunk_size(cfg["chunk_size"])
    found += float_dtype("dtype", cfg["dtype"]) + float_dtype("param_dtype", cfg["param_dtype"])
    found += remat(cfg["remat"])
    found += one_of("projection_dtype", cfg["projection_dtype"], PROJECTION_DTYPES,
                    " (null: the projections in dtype; fp8: model/fp8.py)")
    found += norm_kernel(cfg)
    found += integer("scan_unroll", cfg["scan_unroll"], 1, " (layers per iteration of the "
                     "layer scan)")
    if cfg["softmax_qk_norm"] is not None:
        found += boolean("softmax_qk_norm", cfg["softmax_qk_norm"])
    if cfg["softmax_qk_norm"] is True and cfg["architecture"] == "tnl":
        found.append("softmax_qk_norm=True: architecture='tnl' has no softmax layers "
                     "(expected null or False, or architecture softmax, hybrid or llama)")
    found += boolean("softmax_rope", cfg["softmax_rope"])
    if cfg["softmax_rope"] is False and cfg["architecture"] == "tnl":
        found.append("softmax_rope=False: architecture='tnl' has no softmax layers "
                     "(expected true, or architecture softmax, hybrid or llama)")
    if cfg["softmax_logn_length"] is not None:
        found += integer("softmax_logn_length", cfg["softmax_logn_length"], 2,
                         " (the row length past which queries sharpen; null: off)")
        if cfg["architecture"] == "tnl":
            found.append(f"softmax_logn_length={cfg['softmax_logn_length']}: architecture="
                         "'tnl' has no softmax layers (expected null, or architecture "
                         "softmax, hybrid or llama)")
    if cfg["decay_learnable"] is True and cfg["use_decay"] is False:
        found.append("decay_learnable=True needs use_decay=True")
    return found
