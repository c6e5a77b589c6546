"""The operand roles of the Mosaic GPU walk: which of Q, K, V, dO each pass reads as
rows ``A``, ``B`` and ``C`` (walk.py), the rows ``X`` its decay-gradient partial sums
pair with its output, and whether it walks the chunks in reverse.

    out = ((A Bᵀ) ⊙ M) C + diag(read_decay) A S
    S  ← carry · S + (diag(write_decay) B)ᵀ C

Forward in time ``M = intra``, read = query decay, write = key decay; in reverse
``M = intraᵀ``, read = key decay, write = query decay (docs/DESIGN.md, "Operand roles").
"""
from __future__ import annotations

from typing import NamedTuple


class WalkRoles(NamedTuple):
    a: str              # rows multiplied with B and with the state (the "queries")
    b: str              # rows multiplied with A, and that write the state (the "keys")
    c: str              # the rows the output is made of (the "values")
    reverse: bool       # walk the chunks backward in time
    x: str | None = None  # decay-gradient rows: Σ_a a·(x_a·out_a) − boundary terms
    transposed_state: bool = False  # the walk carries Sᵀ (dSᵀ): its state is w × n


FORWARD = WalkRoles("q", "k", "v", reverse=False)                # o, with S
DQ = WalkRoles("do", "v", "k", reverse=False, x="q", transposed_state=True)   # Sᵀ
DK = WalkRoles("v", "do", "q", reverse=True, x="k", transposed_state=True)    # dSᵀ
DV = WalkRoles("k", "q", "do", reverse=True)                     # dv, with dS
