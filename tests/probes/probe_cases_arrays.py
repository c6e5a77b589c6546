"""Probe cases on arrays and scalars: the model call, generate() and the op."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tests.probes.probe_cases import Case

SMALL = dict(vocab_size=61, decoder_embed_dim=32, decoder_layers=2, decoder_attention_heads=4,
             glu_dim=48, pad_token_id=0, bos_token_id=1, eos_token_id=2,
             attention_backend="xla", chunk_size=16)


@functools.lru_cache(maxsize=None)
def model():
    from flax import nnx
    from tnl_jax import ModelConfig, create_model
    return create_model(ModelConfig(**SMALL, init_std=0.3), nnx.Rngs(0))


def ids(dtype=np.int32, shape=(2, 9), seed=0):
    return np.random.default_rng(seed).integers(3, 61, shape).astype(dtype)


def same_logits(input_ids, **kwargs):
    """The model's logits for ``input_ids`` equal those for the int32 ids."""
    got = np.asarray(model()(input_ids, **kwargs))
    want = np.asarray(model()(np.asarray(input_ids, np.int32)))
    return (got.shape == want.shape and np.allclose(got, want, atol=1e-5),
            f"shape {got.shape}, max diff {np.abs(got - want).max() if got.shape == want.shape else '-'}")


def model_cases() -> list[Case]:
    c = []
    m = lambda *a, **k: model()(*a, **k)  # noqa: E731
    c.append(Case("model", "int8 input_ids", lambda: same_logits(ids(np.int8)), "result"))
    c.append(Case("model", "uint8 input_ids", lambda: same_logits(ids(np.uint8)), "result"))
    c.append(Case("model", "bool input_ids", lambda: m(ids() > 30), says=("input_ids",)))
    c.append(Case("model", "int64 input_ids past int32 (2**32 + 5)",
                  lambda: m(np.full((1, 4), 2**32 + 5, np.int64)), says=("input_ids",)))
    c.append(Case("model", "3-D input_ids", lambda: m(ids(shape=(1, 2, 3))), says=("input_ids",)))
    c.append(Case("model", "float segment_ids", lambda: m(ids(), segment_ids=np.ones((2, 9))),
                  says=("segment_ids",)))
    c.append(Case("model", "(2, 0) input_ids", lambda: m(np.zeros((2, 0), np.int32)),
                  says=("input_ids",)))
    return c


def gen(prompt, n=3, **kwargs):
    from tnl_jax import generate
    return np.asarray(generate(model(), prompt, n, **kwargs))


def same_tokens(prompt, n=3, reference=None, **kwargs):
    got = gen(prompt, n, **kwargs)
    want = gen(np.asarray(prompt, np.int32), int(n), **(reference or {}))
    return bool((got == want).all()), f"{got.tolist()} vs {want.tolist()}"


def generate_cases() -> list[Case]:
    c = []
    p = ids(shape=(1, 5)).tolist()

    def bad(name, *args, says=(), **kwargs):
        c.append(Case("generation", name, lambda: gen(*args, **kwargs), says=says))

    def good(name, prompt, reference=None, **kwargs):
        c.append(Case("generation", name, lambda: same_tokens(prompt, reference=reference,
                                                              **kwargs), "result"))
    bad("prompt uint64 with 2**63", np.full((1, 3), 2**63, np.uint64), says=("prompt_ids",))
    bad("prompt int64 with 2**32 + 5 (wraps to 5?)", np.full((1, 3), 2**32 + 5, np.int64),
        says=("prompt_ids",))
    bad("prompt_ids a string", "abc", says=("prompt_ids",))
    bad("prompt [[1, 2.0]]", [[1, 2.0]], says=("prompt_ids",))
    bad("prompt [[1, True]]", [[1, True]], says=("prompt_ids",))
    bad("temperature=True", p, temperature=True, says=("temperature",))
    bad("temperature='0.5'", p, temperature="0.5", says=("temperature",))
    bad("top_p=np.nan", p, top_p=np.nan, says=("top_p",))
    bad("seed=np.uint64(2**64 - 1)", p, seed=np.uint64(2**64 - 1), says=("seed",))
    bad("max_new_tokens=3.0", p, 3.0, says=("max_new_tokens",))
    good("int8 prompt array", ids(np.int8, (1, 5)))
    good("a tuple of tuples", tuple(tuple(r) for r in p))
    good("temperature=np.float32(0)", p, temperature=np.float32(0),
         reference=dict(temperature=0))
    good("temperature=-0.0 (greedy)", p, temperature=-0.0, reference=dict(temperature=0))
    good("top_k=np.int64(3)", p, top_k=np.int64(3), seed=4, reference=dict(top_k=3, seed=4))
    good("max_new_tokens=np.int64(3)", p, n=np.int64(3))
    good("eos_id=np.int32(2)", p, eos_id=np.int32(2), reference=dict(eos_id=2))
    good("top_p=np.float64(1.0)", p, top_p=np.float64(1.0), seed=1,
         reference=dict(top_p=1.0, seed=1))
    good("top_p=1e-30 (keeps the top token: greedy)", p, top_p=1e-30, seed=2,
         reference=dict(temperature=0))
    good("temperature=1e-30 (greedy)", p, temperature=1e-30, seed=2,
         reference=dict(temperature=0))
    good("a jax int32 array prompt", __import__("jax").numpy.asarray(p, "int32"))

    def hot():
        tokens = gen(p, 8, temperature=1e30, seed=5)
        return bool(((tokens >= 0) & (tokens < 61)).all()), f"{tokens.tolist()}"
    c.append(Case("generation", "temperature=1e30 (uniform): ids in range", hot, "result"))
    c.append(Case("generation", "max_new_tokens=0: (1, 0) tokens", lambda: (
        gen(p, 0).shape == (1, 0), "shape"), "result"))
    return c


def attention(*args, **kwargs):
    from pallas_kernels import lightning_attention
    return lightning_attention(*args, **kwargs)


def qkv(dtype=np.float32, b=1, t=37, h=2, dk=8, dv=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, (b, t, h, d)).astype(dtype) for d in (dk, dk, dv)]


def reference(q, k, v, decay, run_ids=None, initial_state=None):
    from pallas_kernels.lightning import reference as ref
    f64 = lambda x: None if x is None else np.asarray(x, np.float64)  # noqa: E731
    out = ref.recurrent(f64(q), f64(k), f64(v), f64(decay), run_ids=run_ids,
                        initial_state=f64(initial_state))
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def close(got, want, tol):
    got = np.asarray(got, np.float64)
    err = float(np.abs(got - want).max()) if got.shape == want.shape else np.inf
    return bool(err <= tol * (1 + np.abs(want).max())), f"max error {err:.3g}"


DECAY = np.array([0.1, 0.7], np.float32)


def op_cases() -> list[Case]:
    c = []

    def right(name, build, tol=1e-4, **kwargs):
        def call():
            q, k, v, decay, run_ids, state = build()
            got = attention(q, k, v, decay, initial_state=state, **kwargs)
            return close(got, reference(q, k, v, decay, run_ids, state), tol)
        c.append(Case("op", name, call, "result"))

    def bad(name, build, says=(), **kwargs):
        c.append(Case("op", name, lambda: attention(*build(), **kwargs), says=says))

    plain = lambda dt=np.float32, **s: (*qkv(dt, **s), DECAY, None, None)  # noqa: E731
    right("float16 q, k, v (chunk 16, T 37)", lambda: plain(np.float16), 1e-2, chunk_size=16)
    right("bfloat16 q, k, v", lambda: (*[np.asarray(x).astype("bfloat16") for x in qkv()],
                                       DECAY, None, None), 3e-2)
    right("decay float16", lambda: (*qkv(), DECAY.astype(np.float16), None, None), 1e-3)
    right("decay=+inf (each token sees itself)", lambda: (
        *qkv(), np.array([np.inf, np.inf], np.float32), None, None))
    right("decay=1e30 (as +inf)", lambda: (*qkv(), np.array([1e30, 1e30], np.float32),
                                           None, None))
    right("decay=1e-45 (subnormal, as 0)", lambda: (*qkv(), np.array([1e-45, 0], np.float32),
                                                    None, None))
    right("decay=88.8 (exp underflows to a subnormal)",
          lambda: (*qkv(), np.array([88.8, 0.5], np.float32), None, None))

    def float16_large():  # q.k = 80,000 > float16's 65,504; the output is about 80.
        q = np.full((1, 20, 2, 8), 100, np.float16)
        v = np.random.default_rng(1).uniform(1e-3, 2e-3, (1, 20, 2, 8)).astype(np.float16)
        return q, q.copy(), v, DECAY.astype(np.float16), None, None
    right("float16 scores past 65,504, output in range (xla)", float16_large, 1e-2)
    right("float16 scores past 65,504, output in range (interpret)", float16_large, 1e-2,
          backend="interpret", chunk_size=16)
    right("T=1", lambda: plain(t=1))
    right("dk=dv=1", lambda: plain(dk=1, dv=1))
    right("chunk_size=np.int64(32)", lambda: plain(), chunk_size=np.int64(32))
    right("chunk_size=2**20 for T=37", lambda: plain(), chunk_size=2**20)

    def segments(dtype):
        q, k, v = qkv(t=12)
        seg = np.array([[1, 1, 1, 2, 2, 1, 1, 1, 3, 3, 3, 3]], dtype)
        run_ids = np.array([[0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3]])
        return q, k, v, DECAY, run_ids, seg
    for dtype in (np.uint8, np.int16):
        def call(dtype=dtype):
            q, k, v, decay, run_ids, seg = segments(dtype)
            got = attention(q, k, v, decay, segment_ids=seg)
            return close(got, reference(q, k, v, decay, run_ids), 1e-4)
        c.append(Case("op", f"segment_ids {np.dtype(dtype).name}, an id coming back (1,2,1)",
                      call, "result"))

    def bf16_state():
        q, k, v = qkv()
        state = np.random.default_rng(3).normal(0, 1, (1, 2, 8, 8)).astype("bfloat16")
        return q, k, v, DECAY, None, state
    right("initial_state bfloat16", bf16_state, 1e-3)
    bad("decay int32", lambda: (*qkv(), np.array([1, 2], np.int32)), says=("decay",))
    bad("decay a list", lambda: (*qkv(), [0.1, 0.2]), says=("decay",))
    bad("decay 0-d", lambda: (*qkv(), np.float32(0.1)), says=("decay",))
    bad("q complex64", lambda: (*[x.astype(np.complex64) for x in qkv()], DECAY), says=("q",))
    bad("segment_ids bool", lambda: (*qkv(), DECAY), segment_ids=np.ones((1, 37), bool),
        says=("segment_ids",))
    bad("segment_ids float", lambda: (*qkv(), DECAY), segment_ids=np.ones((1, 37)),
        says=("segment_ids",))
    bad("chunk_size=32.0", lambda: (*qkv(), DECAY), chunk_size=32.0, says=("chunk_size",))
    bad("initial_state int32", lambda: (*qkv(), DECAY),
        initial_state=np.ones((1, 2, 8, 8), np.int32), says=("initial_state",))
    bad("return_final_state='yes'", lambda: (*qkv(), DECAY), return_final_state="yes",
        says=("return_final_state",))

    def step_float16_state():
        from pallas_kernels import lightning_attention_step
        q, k, v = [x[:, 0] for x in qkv()]
        state = np.zeros((1, 2, 8, 8), np.float16)
        _, new = lightning_attention_step(q, k, v, DECAY, state)
        return new.dtype == np.float32, f"new state {new.dtype}"
    c.append(Case("op", "step: float16 state -> float32 state", step_float16_state, "result"))
    return c


def cases(scratch: Path) -> list[Case]:
    return [*model_cases(), *generate_cases(), *op_cases()]
