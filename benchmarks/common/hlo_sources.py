"""Which line of our code each kernel of a profile computes: the compiled program's
text (``compiled.as_text()``) names, for every HLO instruction, a stack frame of the
Python that made it. ``profiling.kernel_times`` names each kernel by its HLO
instruction (``"<kernel> [<hlo op>]"``), so its device time can be summed by the model's
functions (``norms.srms_norm``, ``token_mixer._output``, ...) and by pass (forward,
the backward's recomputation, backward): where the time that is not matmuls goes.

    sources = instruction_sources(compiled.as_text())
    print(format_parts(times_by_part(kernel_times(run), sources)))

Limits: a kernel XLA reuses for identical fusions carries the first one's name, so its
time goes to that fusion's source; inside XLA's command buffers cuBLAS and Mosaic
kernels carry only their library's name (profile with ``--xla_gpu_enable_command_buffer=``
to name them: ``benchmarks/training/peers_and_profile.sh``).
"""
from __future__ import annotations

import collections
import dataclasses
import re

# Frames from these folders are ours; the innermost two name the work.
REPO_FOLDERS = ("tnl_jax/", "pallas_kernels/", "benchmarks/")
# Instructions that compute nothing of their own: not counted when naming a fusion.
BOOKKEEPING = {"parameter", "constant", "bitcast", "broadcast", "get-tuple-element",
               "tuple", "reshape", "copy"}

_TABLE_ROW = re.compile(r"^(\d+) (?:\"(.*)\"|\{(.*)\})$")
_FIELD = re.compile(r"(\w+)=(\d+)")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*? ([\w-]+)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) ")


@dataclasses.dataclass(frozen=True)
class Source:
    """What an instruction computes: ``part`` (our innermost two functions, e.g.
    ``token_mixer._output > norms.srms_norm``) and ``phase`` (forward, recompute or
    backward)."""
    part: str
    phase: str


def _tables(hlo_text: str) -> dict[str, dict[int, str]]:
    """The module's FileNames, FunctionNames, FileLocations and StackFrames tables."""
    tables, current = {}, None
    for line in hlo_text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
        elif current is not None and (row := _TABLE_ROW.match(line)):
            current[int(row[1])] = row[2] if row[2] is not None else row[3]
        elif not line.strip() or line.startswith(("%", "ENTRY", "HloModule")):
            current = None
    return tables


def frame_chains(hlo_text: str) -> dict[int, list[tuple[str, str]]]:
    """Stack frame id -> its ``(file, function)`` chain, innermost first.

    The text prints a frame's parent as the parent's id plus one (0: no parent)."""
    tables = _tables(hlo_text)
    files, functions = tables.get("FileNames", {}), tables.get("FunctionNames", {})
    locations = {i: dict((k, int(v)) for k, v in _FIELD.findall(row))
                 for i, row in tables.get("FileLocations", {}).items()}
    frames = {i: dict((k, int(v)) for k, v in _FIELD.findall(row))
              for i, row in tables.get("StackFrames", {}).items()}
    chains = {}
    for frame_id in frames:
        chain, seen, i = [], set(), frame_id
        while i in frames and i not in seen:
            seen.add(i)
            loc = locations.get(frames[i]["file_location_id"], {})
            chain.append((files.get(loc.get("file_name_id"), "?"),
                          functions.get(loc.get("function_name_id"), "?")))
            i = frames[i]["parent_frame_id"] - 1
        chains[frame_id] = chain
    return chains


def part_of(chain: list[tuple[str, str]]) -> str:
    """Our innermost function in ``chain`` and its nearest caller in another of our
    files, outer first (``decoder_layer.DecoderLayer.__call__ > norms.srms_norm``)."""
    ours = []
    for file, function in chain:
        if not any(folder in file for folder in REPO_FOLDERS):
            continue
        stem = file.rsplit("/", 1)[-1].removesuffix(".py")
        if ours and stem == ours[0][0]:
            continue
        ours.append((stem, f"{stem}.{function.split('.<locals>')[0]}"))
        if len(ours) == 2:
            break
    return " > ".join(label for _, label in reversed(ours)) or "(outside our code)"


def phase_of(op_name: str) -> str:
    if "rematted_computation" in op_name:
        return "recompute"
    return "backward" if "transpose(" in op_name else "forward"


def instruction_sources(hlo_text: str) -> dict[str, Source]:
    """Every instruction of the program -> its ``Source``; a fusion (or any caller of a
    computation) gets its callees' most common part, bookkeeping instructions aside."""
    chains = frame_chains(hlo_text)
    own: dict[str, Source] = {}
    computation_parts: dict[str, collections.Counter] = collections.defaultdict(
        collections.Counter)
    callee_of: dict[str, str] = {}
    computation = None
    for line in hlo_text.splitlines():
        if (head := _COMPUTATION.match(line)) and line.rstrip().endswith("{"):
            computation = head[1]
            continue
        if not (ins := _INSTRUCTION.match(line)):
            continue
        name, opcode = ins[1], ins[2]
        frame = re.search(r"stack_frame_id=(\d+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        if frame:
            own[name] = Source(part_of(chains.get(int(frame[1]), [])),
                               phase_of(op_name[1] if op_name else ""))
            if opcode not in BOOKKEEPING and computation:
                computation_parts[computation][own[name]] += 1
        if callee := re.search(r"calls=%([\w.-]+)", line):
            callee_of[name] = callee[1]
    for name, callee in callee_of.items():
        if counts := computation_parts[callee]:
            own[name] = counts.most_common(1)[0][0]
    return own


def kernel_name_of(instruction: str) -> str:
    """The name XLA:GPU gives the kernel of an instruction (``loop_add_fusion.4`` ->
    ``loop_add_fusion_4``)."""
    return re.sub(r"[.-]", "_", instruction)


def times_by_part(times: dict, sources: dict[str, Source]) -> dict[Source, float]:
    """``profiling.kernel_times``'s kernels summed by ``Source`` (ms per call). A kernel
    is found by its HLO instruction or, inside a command buffer (whose name the
    profile gives instead), by its own name; cuBLAS and Mosaic kernels, named by their
    library, are ``Source("(a library kernel: <name>)", "?")``."""
    by_kernel = {kernel_name_of(name): source for name, source in sources.items()}
    totals: dict[Source, float] = collections.Counter()
    for name, ms, _ in times["kernels"]:
        kernel, _, op = name.partition(" [")
        op = op.removesuffix("]")
        source = sources.get(op) or by_kernel.get(kernel)
        if source is None:
            library = re.sub(r"_sm90.*|_\d+$", "", kernel)
            source = Source(f"(a library kernel: {library})", "?")
        totals[source] += ms
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def format_parts(parts: dict[Source, float], top: int = 30) -> str:
    total = sum(parts.values()) or 1.0
    lines = ["| our code | phase | ms | share |", "|---|---|---|---|"]
    lines += [f"| {s.part} | {s.phase} | {ms:.2f} | {100 * ms / total:.1f}% |"
              for s, ms in list(parts.items())[:top]]
    return "\n".join(lines)
