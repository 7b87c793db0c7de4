"""Memory preflight: will this RunConfig fit on that accelerator? (`grpo preflight`).

Maps a RunConfig onto the plain numbers of `grpo_core.memory.Workload` (model shape,
dtype, the derived per-device batch, the mesh), runs the estimate, and when it does not
fit re-runs it with changed config values to name the one or two changes that would fit.
The smoke flow calls `run_preflight(cfg, "v6e-8")` before it rents a VM.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from grpo_core.errors import UserError
from grpo_core.accelerators import GIB, Accelerator, decode_rates, get_accelerator
from grpo_core.layout_choice import choose_weights_layout, with_weights_layout
from grpo_core.memory import MemoryEstimate, Workload, estimate_memory, sampler_view
from grpo_core.models.config import PRESETS, ModelConfig
from schemas.loading import apply_override, parse_override
from schemas.model import base_dtype
from schemas.run import DerivedBatch, RunConfig
from tasks.device_groups import derive_trainer_batch, grid_chips, split_devices

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
# Pullable chat models -> the preset holding their architecture.
_PULLABLE_PRESETS = {"smollm2-135m-instruct": "smollm2-135m"}


@dataclasses.dataclass
class PreflightReport:
    """Estimate of one config on one accelerator, plus config changes that would fit."""

    config: RunConfig
    accelerator: Accelerator
    derived: DerivedBatch
    workload: Workload
    estimate: MemoryEstimate
    suggestions: list[tuple[list[str], MemoryEstimate]]
    sampler_workload: Workload | None = None  # a split's sampler group (None: the samplers share `workload`'s chips)
    best_split: str | None = None  # the best-split line for rollout.max_staleness=1 configs

    @property
    def capacity_bytes(self) -> int:
        return self.accelerator.capacity_bytes

    @property
    def fits(self) -> bool:
        return self.estimate.peak_bytes <= self.capacity_bytes

    @property
    def sampler(self) -> Workload:
        """The workload the sampler programs see (rollout, eval)."""
        return self.sampler_workload or self.workload

    def phase_devices(self, phase: str) -> str:
        """Which devices run `phase`: "sampler N" / "trainer N" with a split, "all N" without."""
        if self.sampler_workload is None:
            return f"all {self.accelerator.chips}"
        sampler = self.config.mesh.sampler_devices
        return f"trainer {self.accelerator.chips - sampler}" if phase == "update" else f"sampler {sampler}"

    @property
    def culprit(self) -> tuple[str, str]:
        """(phase, component) that dominates the peak phase."""
        phase = self.estimate.peak_phase
        return phase, self.estimate.largest(phase)


def resolve_model_config(name_or_path: str) -> ModelConfig:
    """A local HF directory's config.json, else the preset matching the name or hub id."""
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return ModelConfig.from_hf(json.loads((path / "config.json").read_text()))
    key = name_or_path.strip().lower().rsplit("/", 1)[-1]
    key = _PULLABLE_PRESETS.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    match = re.match(r"(?:meta-)?(qwen2\.5|qwen3|llama-3\.[123]|smollm2)-(\d+(?:\.\d+)?[mb])\b", key)
    if match and f"{match[1]}-{match[2]}" in PRESETS:
        return PRESETS[f"{match[1]}-{match[2]}"]
    raise UserError(
        f"model.name_or_path={name_or_path!r} is neither an HF directory with config.json nor a known "
        f"architecture; use a local model directory or one of {sorted(PRESETS)} (hub ids such as "
        "Qwen/Qwen2.5-7B-Instruct, Qwen/Qwen3-8B or meta-llama/Llama-3.1-8B-Instruct map to their preset)"
    )


def mesh_sizes(cfg: RunConfig, accelerator: Accelerator) -> dict[str, int]:
    """Mesh axis sizes: explicit mesh.shape, or auto = dp over hosts, fsdp over each host's chips."""
    if cfg.mesh.shape == "auto":
        return {"dp": accelerator.hosts, "fsdp": accelerator.chips // accelerator.hosts, "tp": 1}
    return {"dp": cfg.mesh.shape.dp, "fsdp": cfg.mesh.shape.fsdp, "tp": cfg.mesh.shape.tp}


def build_workload(cfg: RunConfig, accelerator: Accelerator) -> tuple[Workload, DerivedBatch]:
    """The estimate's inputs for `cfg` on every chip of `accelerator` (one process per host)."""
    derived = cfg.derive(accelerator.hosts, accelerator.chips)
    opt = cfg.train.optimizer
    lora = cfg.model.lora if cfg.model.lora is not None and cfg.model.lora.rank > 0 else None
    workload = Workload(
        model=resolve_model_config(cfg.model.name_or_path),
        param_bytes=DTYPE_BYTES[base_dtype(cfg.model, accelerator.kind)],
        prompts=derived.prompts_global_per_step,
        group_size=cfg.rollout.n,
        max_prompt_tokens=cfg.rollout.max_prompt_tokens,
        new_tokens=cfg.rollout.max_new_tokens,
        micro_batch=derived.micro_batch_size,
        remat=cfg.model.remat,
        optimizer=opt.name,
        momentum=opt.name == "sgd" and opt.b1 is not None,
        reference=cfg.loss.beta > 0,
        mesh=tuple(mesh_sizes(cfg, accelerator).items()),
        tpu=accelerator.kind == "tpu",
        lora_rank=lora.rank if lora else 0,
        lora_targets=tuple(lora.targets) if lora else (),
    )
    local = accelerator.chips // accelerator.hosts
    layout = weights_layout(cfg, workload, accelerator.capacity_bytes, local, decode_rates(accelerator))
    return with_weights_layout(workload, layout, local), derived


def weights_layout(cfg: RunConfig, workload: Workload, capacity_bytes: int | None, local_devices: int,
                   rates: tuple[float, float] | None = None) -> str:
    """rollout.weights_layout resolved: "auto" is the estimate's choice for devices of
    `capacity_bytes` (None, a device that reports no limit, e.g. CPU: the training layout),
    ranked by the decode `rates` of the TPU generation when known."""
    layout = cfg.rollout.weights_layout
    if layout != "auto":
        return layout
    return "fsdp" if capacity_bytes is None else choose_weights_layout(workload, capacity_bytes, local_devices,
                                                                       rates=rates)


def build_group_workloads(cfg: RunConfig, accelerator: Accelerator) -> tuple[Workload, Workload | None, DerivedBatch]:
    """(trainer workload, sampler group's workload or None without a split, derived batch).

    With mesh.sampler_devices = S the run (tasks/session.py) trains on the other chips
    (mesh.shape describes them, the batch is divided over them), and samples on the first
    S (on several hosts: S / hosts of each host's) with the params resharded onto fsdp
    over them in the weights layout the run resolves on the trainer's chips."""
    sampler_chips = cfg.mesh.sampler_devices
    if sampler_chips and accelerator.hosts > 1 and accelerator.kind == "tpu":  # chips the run could give
        grid = tuple(int(n) for n in accelerator.topology.split(":")[1].split("x"))
        split_devices(sampler_chips, grid_chips(grid, accelerator.host_bounds))
    derived = derive_trainer_batch(cfg, accelerator.hosts, accelerator.chips)  # the split's refusals
    if not sampler_chips:
        return build_workload(cfg, accelerator)[0], None, derived
    trainer, _ = build_workload(cfg, dataclasses.replace(accelerator, chips=accelerator.chips - sampler_chips))
    hosts = accelerator.hosts
    sampler = dataclasses.replace(trainer, mesh=(("dp", 1), ("fsdp", sampler_chips), ("tp", 1)),
                                  generation_mesh=None, sampler_group=True)
    sampler = with_weights_layout(sampler, trainer.weights_layout, sampler_chips // hosts)
    return dataclasses.replace(trainer, generation_mesh=None), sampler, derived


def estimate_groups(cfg: RunConfig, accelerator: Accelerator):
    """(trainer workload, sampler workload or None, derived, estimate): the sampler phases
    (prefill, decode, eval) on the sampler's chips, the update on the trainer's."""
    workload, sampler, derived = build_group_workloads(cfg, accelerator)
    estimate = estimate_memory(workload)
    if sampler is not None:
        estimate.phases.update({k: v for k, v in estimate_memory(sampler).phases.items() if k != "update"})
    if cfg.eval.every_steps:
        eval_load = dataclasses.replace(sampler or workload, prompts=cfg.eval.num_prompts, group_size=1,
                                        new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens)
        phases = {k: v for k, v in estimate_memory(eval_load).phases.items() if k != "update"}
        estimate.phases["eval"] = max(phases.values(), key=lambda parts: sum(parts.values()))
    return workload, sampler, derived, estimate


def estimate_config(cfg: RunConfig, accelerator: Accelerator) -> tuple[Workload, DerivedBatch, MemoryEstimate]:
    """Rollout and update (and greedy eval when enabled) bytes per device for `cfg`."""
    workload, _, derived, estimate = estimate_groups(cfg, accelerator)
    return workload, derived, estimate


def best_split(cfg: RunConfig, accelerator: Accelerator) -> str:
    """The mesh.sampler_devices to use for `cfg` on `accelerator`, as one line: of the splits
    whose groups are whole rows of a TPU grid and both fit, the one whose fuller group keeps
    the most headroom (on several hosts: every host gives the same number of its chips).
    Chosen by memory: no step-time model of the two groups backs it."""
    acc = accelerator
    best, step = None, acc.hosts if acc.hosts > 1 else _grid_row(acc)
    for chips in range(step, acc.chips, step):
        try:
            estimate = estimate_config(with_overrides(cfg, [f"mesh.sampler_devices={chips}"]), acc)[2]
        except (UserError, ValueError):
            continue  # e.g. the batch does not divide over the trainer's chips
        headroom = acc.capacity_bytes - estimate.peak_bytes
        if headroom >= 0 and (best is None or headroom > best[1]):
            best = chips, headroom
    if best is None:
        return (f"best split on {acc.name}: none; no mesh.sampler_devices from {step} to {acc.chips - step} "
                f"(in steps of {step}) fits both groups")
    chips, headroom = best
    per_host = f", {chips // acc.hosts} of each host's {acc.chips // acc.hosts}" if acc.hosts > 1 else ""
    return (f"best split on {acc.name}: mesh.sampler_devices={chips} (sampler {chips} chips{per_host}, trainer "
            f"{acc.chips - chips}); chosen by memory, not by time: of the splits where both groups fit, the one "
            f"whose fuller group keeps the most headroom ({headroom / GIB:.2f} GiB per device)")


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """A copy of `cfg` with `--set`-style overrides applied and validated."""
    data = cfg.model_dump(mode="json")
    for text in overrides:
        apply_override(data, *parse_override(text))
    return RunConfig.model_validate(data)


def _peak_if(cfg: RunConfig, accelerator: Accelerator, overrides: list[str]) -> MemoryEstimate | None:
    """The estimate with `overrides`, or None when that config is invalid for this slice."""
    try:
        return estimate_config(with_overrides(cfg, overrides), accelerator)[2]
    except (UserError, ValueError):
        return None


def _first_fit(cfg, accelerator, base: list[str], key: str, values) -> tuple[list[str], MemoryEstimate] | None:
    """The first value of `key` (values ordered least-disruptive first) whose estimate fits."""
    for value in values:
        overrides = base + [f"{key}={value}"]
        estimate = _peak_if(cfg, accelerator, overrides)
        if estimate is not None and estimate.peak_bytes <= accelerator.capacity_bytes:
            return overrides, estimate
    return None


def _single_changes(cfg: RunConfig, derived: DerivedBatch) -> list[tuple[str, list]]:
    """(dotted key, candidate values least-disruptive first) for each knob that lowers memory."""
    micro = derived.micro_batch_size
    micro_values = [d for d in range(micro - 1, 0, -1) if derived.sequences_per_device % d == 0]
    new = cfg.rollout.max_new_tokens
    changes = [
        ("train.micro_batch_size", micro_values),
        ("rollout.batch_size", list(range(cfg.rollout.batch_size - 1, 0, -1))),
        ("rollout.max_new_tokens", [new * k // 8 for k in range(7, 0, -1) if new * k // 8 > 0]),
    ]
    return ([] if cfg.model.remat else [("model.remat", ["true"])]) + changes


def _pair_bases(cfg: RunConfig, derived: DerivedBatch) -> list[list[str]]:
    """The cheapest changes to combine with a second one when no single change fits."""
    bases = [] if cfg.model.remat else [["model.remat=true"]]
    return bases + ([["train.micro_batch_size=1"]] if derived.micro_batch_size > 1 else [])


def suggest_fixes(cfg: RunConfig, accelerator: Accelerator, derived: DerivedBatch,
                  limit: int = 2) -> list[tuple[list[str], MemoryEstimate]]:
    """Up to `limit` override sets that fit: single changes first, else pairs (remat or micro-batch 1 + one)."""
    changes = _single_changes(cfg, derived)
    found = [fit for key, values in changes if (fit := _first_fit(cfg, accelerator, [], key, values))]
    for base in ([] if found else _pair_bases(cfg, derived)):
        base_key = base[0].split("=")[0]
        found += [fit for key, values in changes
                  if key != base_key and (fit := _first_fit(cfg, accelerator, base, key, values))]
    return found[:limit]


def _grid_row(acc: Accelerator) -> int:
    """Chips in a row of a TPU slice's grid ("v6e:2x4" -> 2): a device group is a block of
    the grid (its topology-aware mesh needs one, grpo_core.sharding.make_mesh) when it holds
    whole rows. 1 for GPUs."""
    if acc.kind != "tpu" or ":" not in acc.topology:
        return 1
    return int(acc.topology.split(":")[1].split("x")[0])


def run_preflight(cfg: RunConfig, accelerator: str) -> PreflightReport:
    """Estimate `cfg` on `accelerator` (a name from grpo_core.memory.ACCELERATORS)."""
    acc = get_accelerator(accelerator)
    workload, sampler, derived, estimate = estimate_groups(cfg, acc)
    fits = estimate.peak_bytes <= acc.capacity_bytes
    suggestions = [] if fits else suggest_fixes(cfg, acc, derived)
    split = best_split(cfg, acc) if cfg.rollout.max_staleness >= 1 else None
    return PreflightReport(cfg, acc, derived, workload, estimate, suggestions, sampler, split)


def _gib(value: int) -> str:
    return f"{value / GIB:8.2f}"


def format_report(report: PreflightReport) -> str:
    """The per-device table (component x phase, GiB), the verdict and the suggested changes."""
    est, acc, d, w = report.estimate, report.accelerator, report.derived, report.workload
    phases = list(est.phases)
    components = list(dict.fromkeys(c for p in phases for c in est.phases[p]))
    mesh = _axes(w.mesh)
    g = report.sampler
    layout = g.weights_layout
    if g.generation_mesh is not None:
        layout += f" (sampler mesh {_axes(g.generation_mesh)})"
    if report.sampler_workload is not None:
        mesh = (f"{report.phase_devices('update')} chips, mesh {mesh}; {report.phase_devices('rollout')} chips, "
                f"mesh {_axes(g.mesh)}")
    sampler = sampler_view(g)
    lines = [
        f"preflight: {report.config.model.name_or_path} on {acc.name} ({acc.chips} chips x {acc.hbm_gib:g} GiB, "
        f"{acc.hosts} host(s)); mesh {mesh}; rollout weights {layout}",
        f"per device: rollout {sampler.sampler_prompts_per_device} prompts x n={w.group_size} (prompt slots "
        f"{w.prompt_slots} + {w.new_tokens} new); update {d.sequences_per_device} sequences of "
        f"{w.update_tokens} tokens in micro-batches of {d.micro_batch_size} x {d.grad_accum_steps}; "
        f"{report.config.model.dtype}, remat {'on' if w.remat else 'off'}, {w.optimizer}",
        f"{'GiB per device':24s}" + "".join(f"{p:>10s}" for p in phases),
    ]
    if report.sampler_workload is not None:
        lines.append(f"{'runs on (chips)':24s}" + "".join(f"{report.phase_devices(p):>10s}" for p in phases))
    for c in components:
        lines.append(f"{c:24s}" + "".join(f"  {_gib(est.phases[p].get(c, 0))}" for p in phases))
    rows = [(f"total (+{est.overhead:.0%} overhead)", [est.total(p) for p in phases]),
            ("capacity", [report.capacity_bytes] * len(phases)),
            ("headroom", [report.capacity_bytes - est.total(p) for p in phases])]
    lines += [f"{name:24s}" + "".join(f"  {_gib(v)}" for v in values) for name, values in rows]
    lines.append(_verdict(report))
    lines += [f"  fits with: --set {' --set '.join(o)}  (peak {e.peak_bytes / GIB:.2f} GiB)"
              for o, e in report.suggestions]
    return "\n".join(lines + ([report.best_split] if report.best_split else []))


def _axes(mesh) -> str:
    return " ".join(f"{k}={v}" for k, v in mesh)


def _verdict(report: PreflightReport) -> str:
    est, cap = report.estimate, report.capacity_bytes
    phase, component = report.culprit
    peak = est.peak_bytes / GIB
    if report.fits:
        return f"FITS: peak {peak:.2f} GiB in {phase}, {(cap - est.peak_bytes) / GIB:.2f} GiB headroom per device"
    share = est.phases[phase][component] / GIB
    tail = "" if report.suggestions else "; no single change to batch size, micro-batch, remat or length fits"
    return (f"DOES NOT FIT: {phase} needs {peak:.2f} GiB of {cap / GIB:.2f} GiB per device; "
            f"largest part: {phase} {component} ({share:.2f} GiB){tail}")
