"""The collectives of a compiled program, read from its HLO text: which op, how many
bytes, how often it runs, and which mesh axes its device groups span.

``read_collectives(compiled.as_text(), mesh)`` lists every all-reduce, all-gather,
reduce-scatter, all-to-all and collective-permute (their ``-start`` forms included)
with:

- ``bytes``: the size of its result (a tuple's parts summed); ``arrays``: its parts'
  types (``f32[512,32]``), to pick out the collectives that carry a given array;
- ``executions``: how many times one step runs it: 1 in the entry computation, times
  the ``known_trip_count`` of every ``while`` loop around it (the layer scan, the op's
  chunk loops), summed over the computations that call it;
- ``group_size`` and ``axes``: the size of each device group and the mesh axes along
  which a group's devices differ (the groups are read in any of XLA's forms: explicit
  ``{{0,1},{2,3}}``, iota ``[2,2]<=[4]``, or ``mesh[...]``/``device_ids`` with named
  axes; device ``i`` of the program is position ``i`` of ``mesh.devices`` flattened,
  the order ``jax.jit`` assigns a mesh's devices);
- ``traffic``: the bytes each device sends per execution by a ring algorithm
  (all-reduce ``2 (n-1)/n`` of the array, all-gather and all-to-all ``(n-1)/n`` of the
  whole array, reduce-scatter ``(n-1)`` times its result, collective-permute its
  result).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict

import numpy as np
from jax.sharding import AbstractMesh, Mesh

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
               "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
               "c128": 16}
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([\w\-]+)\((.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_CALLED = re.compile(r"\b(?:body|calls|to_apply|branch_computations|true_computation|"
                     r"false_computation)=\{?((?:%?[\w.\-]+(?:, )?)+)\}?")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective of a compiled program (see the module docstring)."""
    kind: str
    bytes: int
    executions: int
    group_size: int
    axes: tuple[str, ...]
    kept_bytes: int | None = None  # an all-reduce's bytes its users keep (slices)
    arrays: tuple[str, ...] = ()  # its result's arrays, e.g. ("f32[512,32]", "f32[]")

    @property
    def traffic(self) -> float:
        """Bytes each device sends per execution (ring algorithm)."""
        n = self.group_size
        if n <= 1:
            return 0.0
        if self.kind == "all-reduce":
            # Reduce-scatter, then gather only the kept part: (n-1)/n + (n/k-1)/n of
            # the array for a kept share 1/k (k = 1: a whole all-reduce).
            k = self.bytes / self.kept_bytes if self.kept_bytes else 1.0
            return ((n - 1) / n + max(n / k - 1, 0) / n) * self.bytes
        if self.kind == "reduce-scatter":
            return (n - 1) * self.bytes
        if self.kind == "collective-permute":
            return float(self.bytes)
        return (n - 1) / n * self.bytes


def array_bytes(type_text: str) -> int:
    """Bytes of an HLO type: ``f32[2,3]{1,0}`` or a tuple of arrays (summed)."""
    total = 0
    for dtype, dims in _ARRAY.findall(type_text):
        if dtype not in DTYPE_BYTES and not dtype.startswith("f8"):
            raise ValueError(f"HLO type {type_text!r}: unknown element type {dtype!r}")
        size = math.prod(int(d) for d in dims.split(",") if d)
        total += size * DTYPE_BYTES.get(dtype, 1)
    return total


def array_types(type_text: str) -> tuple[str, ...]:
    """The arrays of an HLO type, layouts dropped: ``(f32[2,3]{1,0}, s32[])`` ->
    ``("f32[2,3]", "s32[]")``."""
    return tuple(f"{dtype}[{dims}]" for dtype, dims in _ARRAY.findall(type_text))


def _iota(dims: list[int], reshape: list[int], transpose: list[int] | None) -> np.ndarray:
    ids = np.arange(math.prod(reshape)).reshape(reshape)
    if transpose is not None:
        ids = ids.transpose(transpose)
    return ids.reshape(dims)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def device_groups(attributes: str, device_count: int) -> list[list[int]]:
    """The device groups of a collective's attributes (every form XLA prints)."""
    pairs = re.search(r"source_target_pairs=\{(.*?)\}\}", attributes)
    if pairs:  # A permute: each pair is a group (of 2, or 1 for a self-pair).
        return [sorted(set(_ints(p))) for p in re.findall(r"\{([\d,]+)", pairs.group(1) + "}")]
    named = re.search(r"replica_groups=mesh\[(.*?)\](?:, device_ids=\(\[([\d,]+)\]"
                      r"(?:T\(([\d,]+)\))?\))? \{(.*?)\}", attributes)
    if named:
        sizes = dict((k, int(v)) for k, v in re.findall(r"'(\w+)'=(\d+)", named.group(1)))
        dims = list(sizes.values())
        ids = (_iota(dims, _ints(named.group(2)), _ints(named.group(3)) if named.group(3)
                     else None) if named.group(2) else np.arange(math.prod(dims)).reshape(dims))
        chosen = [list(sizes).index(a) for a in re.findall(r"'(\w+)'", named.group(4))]
        rest = [i for i in range(len(dims)) if i not in chosen]
        grouped = ids.transpose(rest + chosen)
        return grouped.reshape(-1, math.prod(dims[i] for i in chosen)).tolist()
    iota = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", attributes)
    if iota:
        transpose = _ints(iota.group(3)) if iota.group(3) else None
        return _iota(_ints(iota.group(1)), _ints(iota.group(2)), transpose).tolist()
    explicit = re.search(r"replica_groups=\{((?:\{[\d,]*\},?\s*)*)\}", attributes)
    groups = [_ints(g) for g in re.findall(r"\{([\d,]*)\}", explicit.group(1) + "}")] \
        if explicit else []
    groups = [g for g in groups if g]
    return groups or [list(range(device_count))]


def spanned_axes(groups: list[list[int]], mesh: Mesh | AbstractMesh) -> tuple[str, ...]:
    """The mesh axes along which the devices of some group differ."""
    shape = tuple(mesh.shape.values())
    axes = set()
    for group in groups:
        coords = np.array(np.unravel_index(np.array(group), shape)).T
        axes.update(i for i in range(len(shape)) if len(set(coords[:, i])) > 1)
    return tuple(name for i, name in enumerate(mesh.axis_names) if i in axes)


def _computations(hlo_text: str) -> dict[str, list[str]]:
    """Computation name -> its instruction lines; ``"ENTRY"`` names the entry's."""
    found, current = {}, None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = "ENTRY" if line.startswith("ENTRY") else header.group(1)
            found[current] = []
        elif current is not None and line.strip() and line.strip() != "}":
            found[current].append(line)
    if "ENTRY" not in found:
        raise ValueError("HLO text: no ENTRY computation (pass compiled.as_text())")
    return found


def executions(computations: dict[str, list[str]]) -> dict[str, int]:
    """How many times one run of the entry runs each computation (loops' known trip
    counts multiplied; a loop without one counts once)."""
    calls: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for name, lines in computations.items():
        for line in lines:
            trips = _TRIP_COUNT.search(line)
            for match in _CALLED.finditer(line):
                is_body = match.group(0).startswith("body=")
                for callee in re.split(r",\s*", match.group(1)):
                    calls[name].append((callee.lstrip("%"),
                                        int(trips.group(1)) if is_body and trips else 1))
    counts: dict[str, int] = defaultdict(int)

    def visit(name: str, times: int) -> None:
        counts[name] += times
        for callee, factor in calls.get(name, []):
            if callee in computations:
                visit(callee, times * factor)
    visit("ENTRY", 1)
    return counts


def read_collectives(hlo_text: str, mesh: Mesh | AbstractMesh) -> list[Collective]:
    """Every collective of a compiled program's HLO text (see the module docstring)."""
    computations = _computations(hlo_text)
    counts = executions(computations)
    found = []
    for name, lines in computations.items():
        instructions = {m.group(1): m.groups()[1:] for m in map(_INSTRUCTION.match, lines) if m}
        users = _users(instructions)
        for result_name, (result, op, attributes) in instructions.items():
            kind = op.removesuffix("-start")
            if kind not in KINDS:
                continue
            groups = device_groups(attributes, math.prod(mesh.shape.values()))
            if op.endswith("-start") and result.startswith("("):
                result = _async_result(result, kind)
            kept = (_kept_bytes(result_name, instructions, users)
                    if kind == "all-reduce" and not op.endswith("-start") else None)
            found.append(Collective(kind, array_bytes(result), counts.get(name, 0),
                                    max(len(g) for g in groups), spanned_axes(groups, mesh),
                                    kept, array_types(result)))
    return found


def _users(instructions: dict[str, tuple[str, str, str]]) -> dict[str, list[str]]:
    """Instruction name -> the names of the instructions that take it as an operand."""
    users: dict[str, list[str]] = defaultdict(list)
    for name, (_, _, attributes) in instructions.items():
        for operand in set(re.findall(r"%([\w.\-]+)", attributes.split("), ")[0])):
            users[operand].append(name)
    return users


def _kept_bytes(name: str, instructions, users) -> int:
    """The bytes of ``name``'s result that its users need: a user that only slices it
    (``dynamic-slice``, or a fusion named for one, as SPMD writes a reduce-scatter it
    has not formed) needs its slice; tuple elements are counted one by one; any other
    user needs the whole."""
    uses = users.get(name, [])
    whole = array_bytes(instructions[name][0])
    if uses and all(instructions[u][1] == "get-tuple-element" for u in uses):
        return min(whole, sum(_kept_bytes(u, instructions, users) for u in uses))
    if uses and all("dynamic-slice" in u or "dynamic_slice" in u
                    or instructions[u][1] == "dynamic-slice" for u in uses):
        return min(whole, sum(array_bytes(instructions[u][0]) for u in uses))
    return whole


def _async_result(tuple_type: str, kind: str) -> str:
    """The result part of an async ``-start``'s ``(operands, result[, context])``
    tuple: its second element for a gather or permute; an all-reduce-start's type is
    its result already."""
    if kind == "all-reduce":
        return tuple_type
    parts = re.findall(r"\([^()]*\)|[a-z]+\d*\[[\d,]*\](?:\{[\d,]*\})?", tuple_type[1:-1])
    return parts[1] if len(parts) > 1 else tuple_type


def traffic_by_axes(collectives: list[Collective]) -> dict[tuple[str, ...], float]:
    """Bytes each device sends per step, by the mesh axes the groups span."""
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for c in collectives:
        if c.group_size > 1 and c.executions:
            totals[c.axes] += c.traffic * c.executions
    return dict(totals)
