"""What one iteration of a compiled while loop does, read from XLA's optimized HLO text.

`compiled.cost_analysis()` counts a loop body once, whatever its trip count, so it cannot
say what a decode step costs: the decode loop's body holds the layer scan (another while
loop, L iterations). Here the optimized module (`compiled.as_text()`, or an
`--xla_dump_to` after_optimizations file) is walked from one loop's body down through
every computation it calls, nested loops multiplied by their known trip counts, to add up
per device (a loop's trip count: see `_trip_count`):

- collective bytes: what the device moves over the interconnect per ring-style
  collective of a group of n devices: all-gather (n-1)/n of its result, reduce-scatter
  and all-to-all (n-1)/n of the operand, all-reduce 2(n-1)/n of the operand,
  collective-permute the operand; a collective counted once per iteration even when XLA
  splits it over several fusions (they share its channel id);
- matmul FLOPs: 2 x result elements x contracted elements, per dot, and per convolution
  (how XLA:TPU writes its matmuls); elementwise work is not counted.
"""
from __future__ import annotations

import dataclasses
import math
import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\]")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OP = re.compile(r"\s([a-z][\w\-]*)\((.*)$")
_CALLS = re.compile(r"\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)|\bbranch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


@dataclasses.dataclass
class LoopCost:
    """Per device, one iteration of a loop: collective bytes by kind, their op count, dot FLOPs."""

    collective_bytes: dict[str, float]
    collective_ops: dict[str, int]
    flops: float
    channels: set = dataclasses.field(default_factory=set, repr=False)  # collectives counted (by channel id)

    @property
    def total_collective_bytes(self) -> float:
        return sum(self.collective_bytes.values())


def _shapes(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(d, tuple(int(x) for x in dims.split(",") if x)) for d, dims in _SHAPE.findall(text)]


def _bytes(shapes) -> int:
    return sum(_DTYPE_BYTES[d] * math.prod(dims) for d, dims in shapes)


def computations(hlo: str) -> dict[str, list[str]]:
    """Computation name -> its instruction lines (the ENTRY computation is also under "ENTRY")."""
    out, current = {}, None
    for line in hlo.splitlines():
        header = _HEADER.match(line)
        if header and not line.startswith(" "):
            current = out.setdefault(header[1], [])
            if line.startswith("ENTRY"):
                out["ENTRY"] = current
        elif line.startswith("}"):
            current = None
        elif current is not None and _INSTR.match(line):
            current.append(line)
    return out


def _group_size(line: str) -> int:
    """Devices per replica group, in any of XLA's three spellings: [groups,size]<=[n],
    {{0,1},{2,3}}, or mesh['axis_0'=4,'axis_1'=2][, device_ids=..] {'axis_0'} (the named axes' product)."""
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)
    if iota:
        return int(iota[2])
    explicit = re.search(r"replica_groups=\{\{([0-9,]*)\}", line)
    if explicit:
        return len(explicit[1].split(","))
    named = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}", line)  # device_ids=(..) may sit between
    if named:
        sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'=(\d+)", named[1])}
        return math.prod(sizes[a] for a in re.findall(r"'([^']+)'", named[2]))
    return 1


def _collective_bytes(kind: str, line: str, result, operands) -> float:
    n = _group_size(line)
    if kind == "collective-permute":
        return _bytes(operands)
    share = (n - 1) / n if n > 1 else 0.0
    if kind == "all-gather":  # an async start's result holds (operand, result): the largest is the gathered one
        return share * max(_bytes([s]) for s in result)
    return share * _bytes(operands) * (2 if kind == "all-reduce" else 1)


def _dot_flops(line: str, result, operands) -> float:
    lhs = operands[0][1] if operands else ()
    contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", line)
    contracted = math.prod(lhs[int(i)] for i in contracting[1].split(",") if i) if contracting else 1
    return 2.0 * math.prod(result[0][1]) * contracted if result else 0.0


def _conv_flops(line: str, result, operands) -> float:
    """2 x output elements x the input features x, per window dimension, the input elements a
    window really covers. XLA:TPU writes batched matmuls as convolutions whose windows run
    over padding or dilation holes (e.g. heads as a spatial dim of size 1 padded to a window
    of 16): only min(window, input size, window / lhs dilation) of it is real input."""
    labels = re.search(r"dim_labels=(\w+)_\w+->", line)
    if not labels or len(operands) < 2 or not result or len(operands[0][1]) != len(labels[1]):
        return 0.0
    lhs, names = operands[0][1], labels[1]
    groups = re.search(r"feature_group_count=(\d+)", line)
    features = lhs[names.index("f")] // (int(groups[1]) if groups else 1)
    spatial = [lhs[i] for i, c in enumerate(names) if c.isdigit()]
    window = re.search(r"window=\{size=([0-9x]+)", line)
    sizes = [int(x) for x in window[1].split("x")] if window else [1] * len(spatial)
    dilate = re.search(r"lhs_dilate=([0-9x]+)", line)
    dilations = [int(x) for x in dilate[1].split("x")] if dilate else [1] * len(spatial)
    covered = math.prod(min(k, n, -(-k // d)) for k, n, d in zip(sizes, spatial, dilations))
    return 2.0 * math.prod(result[0][1]) * features * covered


def loop_cost(hlo: str, body: str, comps: dict | None = None) -> LoopCost:
    """Collective bytes and dot FLOPs of one iteration of the loop whose body is `body`."""
    comps = computations(hlo) if comps is None else comps
    cost = LoopCost({}, {}, 0.0)
    _walk(comps, body, 1.0, cost, set())
    return cost


def _walk(comps, name: str, times: float, cost: LoopCost, stack: set) -> None:
    if name in stack or name not in comps:
        return
    stack = stack | {name}
    shape_of = {}
    for line in comps[name]:
        target, rhs = _INSTR.match(line).groups()
        op = _OP.search(" " + rhs)
        if op is None:
            continue
        kind, rest = op[1], op[2]
        result = _shapes(rhs[: op.start()])
        shape_of[target] = result
        # Operands are printed with their shapes by some XLA versions, as bare names by others.
        args = rest.split("),")[0] if _SHAPE.search(rest.split("),")[0]) else rest.split(")")[0]
        operands = _shapes(args) or [s for n in re.findall(r"%([\w.\-]+)", args) for s in shape_of.get(n, [])]
        base = kind.removesuffix("-start")
        channel = re.search(r"channel_id=(\d+)", line)
        if base in COLLECTIVES and channel and channel[1] in cost.channels:
            pass  # one collective split over several fusions (XLA:TPU's async collective fusion on v5e)
        elif base in COLLECTIVES and not kind.endswith("-done"):
            if channel:
                cost.channels.add(channel[1])
            cost.collective_bytes[base] = cost.collective_bytes.get(base, 0.0) + times * _collective_bytes(
                base, line, result, operands)
            cost.collective_ops[base] = cost.collective_ops.get(base, 0) + int(times)
        elif kind == "dot":
            cost.flops += times * _dot_flops(line, result, operands)
        elif kind == "convolution":  # XLA:TPU writes its matmuls as convolutions
            cost.flops += times * _conv_flops(line, result, operands)
        if kind.endswith(("-done", "-update")):
            continue  # an async pair's second half names the same computation as its start
        trips = _trip_count(comps, line) if kind == "while" else None
        inner = times * (trips or 1)
        for single, branches in _CALLS.findall(line):
            for callee in [single] if single else re.findall(r"%?([\w.\-]+)", branches):
                _walk(comps, callee, inner, cost, stack)


def _trip_count(comps, line: str) -> int | None:
    """A while loop's trip count: XLA's known_trip_count when it printed one (XLA:CPU does),
    else a condition that is just `counter < constant` (XLA:TPU's scans; the counter
    starts at 0), else None (a data-dependent loop such as the decode loop)."""
    known = _TRIP.search(line)
    if known:
        return int(known[1])
    condition = re.search(r"condition=%?([\w.\-]+)", line)
    lines = comps.get(condition[1], []) if condition else []
    root = next((l for l in lines if l.lstrip().startswith("ROOT")), "")
    compare = re.search(r"compare\(%?([\w.\-]+), %?([\w.\-]+)\), direction=LT", root)
    if compare is None:
        return None
    for l in lines:
        target, rhs = _INSTR.match(l).groups()
        constant = re.search(r"constant\((\d+)\)", rhs)
        if target == compare[2] and constant:
            return int(constant[1])
    return None


def while_loops(hlo: str, comps: dict | None = None) -> list[tuple[str, int | None]]:
    """(body computation, known trip count or None) of every while loop in the module."""
    comps = computations(hlo) if comps is None else comps
    loops = []
    for lines in comps.values():
        for line in lines:
            if re.search(r"\swhile\(", line):
                body = re.search(r"body=%?([\w.\-]+)", line)
                loops.append((body[1], _trip_count(comps, line)))
    return list(dict.fromkeys(loops))


def decode_loop_cost(hlo: str) -> LoopCost:
    """One decode step of the sampler: the outermost while loop without a known trip count
    (it stops when every row has ended), nested loops (the layer scan) multiplied in."""
    comps = computations(hlo)
    loops = [body for body, trips in while_loops(hlo, comps) if trips is None]
    if not loops:
        raise ValueError("no while loop with an unknown trip count (the decode loop) in this module")
    # The outermost: the one whose body reaches the most others.
    return max((loop_cost(hlo, body, comps) for body in loops), key=lambda c: c.flops)
