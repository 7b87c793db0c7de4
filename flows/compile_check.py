"""`grpo preflight --compile`: XLA's own answer, per phase, for a config on a TPU slice.

Builds the run exactly as a TPU worker would (the slice's devices from libtpu's topology,
the run's mesh, abstract params and optimizer state in the config's dtype, the derived
per-process batch at its worst-case shapes) and compiles the programs the run executes:
the rollout sampler, the update, and the greedy eval sampler when eval is on. Multi-host
slices compile from this one process: the topology holds every host's devices, and the
batch is the global one each host's process feeds its share of. With mesh.sampler_devices
= S (one host) each group's programs compile for its own part of the slice's topology, as
the run builds its meshes: the samplers for the first S chips, the update for the rest,
with the batch divided over the trainer's chips.

Everything runs on the CPU host: libtpu is told not to look for TPU hardware
(TPU_SKIP_MDS_QUERY) and JAX's own backend is the CPU. XLA's answers are kept per lowered
program in `cache_dir` (grpo_core.aot.ResultStore), so a second check of the same config
takes seconds.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import os
import tempfile
from pathlib import Path

from grpo_core import lora as lora_lib
from grpo_core.errors import UserError
from grpo_core.memory import Accelerator
from schemas.run import RunConfig

PHASES = ("rollout", "update", "eval")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grpo-flows" / "xla-tpu"


def require_libtpu() -> None:
    """A UserError saying how to get libtpu when it is not installed."""
    if importlib.util.find_spec("libtpu") is None:
        import jax

        raise UserError(
            "--compile needs libtpu (XLA's TPU compiler), which is not installed; install the tpu extra "
            f'(pip install -e ".[tpu]") or pip install "jax[tpu]=={jax.__version__}"')


def parse_phases(text: str | None) -> tuple[str, ...]:
    """--phases rollout,update,eval -> a tuple in pipeline order; unknown names are a UserError."""
    if not text:
        return PHASES
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(names) - set(PHASES))
    if unknown or not names:
        raise UserError(f"--phases {text!r}: unknown phase(s) {', '.join(unknown) or '(none given)'}; "
                        f"use a comma-separated subset of {','.join(PHASES)}")
    return tuple(p for p in PHASES if p in names)


def use_compile_only_tpu() -> None:
    """JAX on the CPU, and libtpu's compile-only client without probing for TPU hardware."""
    import jax

    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # libtpu takes a machine-wide lock file for the chips; a compile-only client uses none,
    # so two checks (or a check beside a TPU-less run) may load it at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    jax.config.update("jax_platforms", "cpu")


@contextlib.contextmanager
def _stderr_kept_unless_failure():
    """libtpu's C++ init writes warnings about the missing TPU hardware straight to fd 2;
    hold them back, and show them only if the initialisation fails."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def slice_devices(acc: Accelerator) -> list:
    from grpo_core.aot import topology_devices

    if acc.kind != "tpu":
        raise UserError(f"--compile compiles for TPU slices; {acc.name} is a GPU (use --tpu)")
    with _stderr_kept_unless_failure():
        return topology_devices(acc)


@dataclasses.dataclass
class PhasePrograms:
    """The programs `cfg` runs on the slice, each as a function giving its jax Lowered, and
    what they were built from (the meshes of the two device groups, the derived batch)."""

    lowerings: dict
    resident: int  # bytes the samplers' programs hold beside their own (the trainer's state without a split)
    derived: object
    model_cfg: object
    mesh: object  # the update's
    generation_mesh: object  # the samplers'
    dtype: object


def phase_programs(cfg: RunConfig, acc: Accelerator) -> PhasePrograms:
    """The rollout, update and eval programs of `cfg` for the slice `acc`, lowered on demand."""
    require_libtpu()
    use_compile_only_tpu()
    import jax.numpy as jnp

    from flows.preflight import base_dtype, resolve_model_config
    from grpo_core import aot
    from grpo_core.models.model import Model
    from grpo_core.phases import update_width
    from grpo_core.sampling import lower_generate
    from tasks.device_groups import derive_trainer_batch

    derived = derive_trainer_batch(cfg, acc.hosts, acc.chips)  # a split's refusals before libtpu starts
    model_cfg = resolve_model_config(cfg.model.name_or_path)
    mesh, gen_mesh = group_meshes(cfg, acc, slice_devices(acc), model_cfg)
    dtype = jnp.dtype(base_dtype(cfg.model, acc.kind))
    params, ref, resident, trainer, opt_state = _update_state(cfg, model_cfg, mesh, dtype, derived.grad_accum_steps)
    lora = lora_lib.spec_from_config(cfg.model.lora)
    if cfg.mesh.sampler_devices:  # the sampler group holds its copy of the params (the programs' argument) alone
        resident = 0
    elif lora is not None:  # the sampler's weights are the merge: targets copied, the rest the base's own
        base = aot.resident_bytes(ref)
        resident += base if gen_mesh is not mesh else base - aot.resident_bytes(
            {name: ref["layers"][name] for name in lora.targets})
    elif gen_mesh is not mesh:
        resident += aot.resident_bytes(params)
    r, model = cfg.rollout, Model(model_cfg, aot.abstract_params(model_cfg, dtype, gen_mesh))
    lowerings = {
        "rollout": lambda: lower_generate(
            model, derived.prompts_global_per_step, r.max_prompt_tokens, gen_mesh, max_new_tokens=r.max_new_tokens,
            temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, n=r.n),
        "update": lambda: trainer.lower(params, opt_state, aot.abstract_update_batch(
            derived.sequences_global_per_step, update_width(r.max_prompt_tokens, r.max_new_tokens), mesh,
            sampler_logps=cfg.loss.tis_cap is not None), ref),
        "eval": lambda: lower_generate(
            model, cfg.eval.num_prompts, r.max_prompt_tokens, gen_mesh,
            max_new_tokens=cfg.eval.max_new_tokens or r.max_new_tokens, temperature=0.0, top_p=r.top_p,
            top_k=r.top_k, n=1),
    }
    return PhasePrograms(lowerings, resident, derived, model_cfg, mesh, gen_mesh, dtype)


def compile_config(cfg: RunConfig, acc: Accelerator, phases=PHASES, cache_dir: Path | None = None,
                   log=lambda message: None) -> dict:
    """{phase: grpo_core.aot.CompiledPhase} for the programs `cfg` runs on the slice `acc`."""
    from grpo_core import aot

    built = phase_programs(cfg, acc)
    programs, resident = built.lowerings, built.resident
    store = None if cache_dir is None else aot.ResultStore(cache_dir, compiler_id(acc))
    results = {}
    for phase in phases:
        if phase == "eval" and not cfg.eval.every_steps:
            continue
        log(f"compiling {phase} for {acc.name} ...")
        results[phase] = aot.compile_phase(phase, programs[phase], 0 if phase == "update" else resident, store)
        log(f"{phase}: {results[phase].seconds:.1f} s{' (known program: figures from the cache)' if results[phase].cached else ''}")
    return results


def group_meshes(cfg: RunConfig, acc: Accelerator, devices: list, model_cfg):
    """(the update's mesh, the samplers' generation mesh) over the slice's `devices`, as
    tasks/session.py builds them: with mesh.sampler_devices = S the update's mesh is the
    chips after the first S, the samplers' the first S (on several hosts S / hosts of each
    host's, as tasks.device_groups.split_devices chooses; fsdp over them, then the run's
    weights layout), each program compiled for its own group's part of the slice; without
    a split both are every chip, the samplers' in the generation layout."""
    from flows.preflight import build_group_workloads
    from grpo_core.layouts import generation_mesh
    from tasks.device_groups import split_devices
    from tasks.device_groups import run_meshes

    split, hosts = cfg.mesh.sampler_devices, acc.hosts
    layout = build_group_workloads(cfg, acc)[1 if split else 0].weights_layout  # a split's refusals, for acc
    sampler, trainer = split_devices(split, devices)
    mesh, sampler_mesh = run_meshes(cfg, hosts, sampler, trainer)
    return mesh, generation_mesh(sampler_mesh, layout, model_cfg, len(sampler) // hosts)


def _update_state(cfg: RunConfig, model_cfg, mesh, dtype, grad_accum_steps: int):
    """(trained params, frozen ref_params or None, their resident bytes beside the sampler,
    trainer, optimizer state), abstract: with LoRA the adapters train and the base is the
    frozen argument (grpo_core.train_step)."""
    from grpo_core import aot
    from tasks.session import make_trainer

    base = aot.abstract_params(model_cfg, dtype, mesh)
    trainer = make_trainer(cfg, model_cfg, mesh, grad_accum_steps)
    lora = lora_lib.spec_from_config(cfg.model.lora)
    if lora is None:
        opt_state = trainer.abstract_opt_state(base)
        ref = base if cfg.loss.beta > 0 else None
        resident = aot.resident_bytes(opt_state) + (aot.resident_bytes(ref) if ref is not None else 0)
        return base, ref, resident, trainer, opt_state
    adapters = lora_lib.abstract_adapters(model_cfg, lora, mesh)
    opt_state = trainer.abstract_opt_state(adapters)
    return adapters, base, aot.resident_bytes(opt_state) + aot.resident_bytes(adapters), trainer, opt_state


def compiler_id(acc: Accelerator) -> str:
    """What else, besides the program, decides XLA's answer: the compiler versions and the slice."""
    return f"{compiler_version()} {acc.topology} {acc.chip_config} {acc.host_bounds}"


def phase_estimates(estimate) -> dict[str, int]:
    """The analytic estimate per compiled program: rollout is one program (prefill + decode)."""
    out = {"rollout": max(estimate.total("prefill"), estimate.total("decode")), "update": estimate.total("update")}
    if "eval" in estimate.phases:
        out["eval"] = estimate.total("eval")
    return out


def summary(report, compiled: dict | None) -> dict:
    """The --json document: the verdict and, per phase, estimate, XLA, capacity and compile time."""
    estimates = phase_estimates(report.estimate)
    phases = {}
    for phase, estimate in estimates.items():
        result = (compiled or {}).get(phase)
        if compiled is not None and result is None:
            continue  # not asked for with --phases
        phases[phase] = {"estimate_bytes": estimate, "xla_bytes": result.xla_bytes if result else None,
                         "capacity_bytes": report.capacity_bytes,
                         "compile_seconds": round(result.seconds, 2) if result else None}
        if result is not None:
            # A known program is answered from the cache: compile_seconds is then this
            # check's lowering time, xla_compile_seconds what XLA took when it compiled it.
            phases[phase]["cached"] = result.cached
            phases[phase]["xla_compile_seconds"] = None if result.xla_seconds is None else round(result.xla_seconds, 1)
        if result is not None and result.memory is not None:
            phases[phase]["xla"] = dataclasses.asdict(result.memory)
        if result is not None and result.error:
            phases[phase]["xla_error"] = result.error.strip().splitlines()[0][:500]
    fits = report.fits if compiled is None else not does_not_fit(compiled, report.capacity_bytes)
    for phase in phases:
        phases[phase]["devices"] = report.phase_devices(phase)
    return {"verdict": "fits" if fits else "does_not_fit", "source": "estimate" if compiled is None else "xla",
            "accelerator": report.accelerator.name, "weights_layout": report.sampler.weights_layout,
            "sampler_devices": report.config.mesh.sampler_devices, "phases": phases}


def does_not_fit(compiled: dict, capacity: int) -> list[str]:
    """Phases XLA says do not fit: out of memory at compile time, or more bytes than the capacity."""
    return [p for p, r in compiled.items() if r.oom or (r.memory is not None and r.memory.total > capacity)]


def failed(compiled: dict) -> list:
    """Phases XLA could not compile for a reason other than memory: a bug found before renting."""
    return [r for r in compiled.values() if r.error and not r.oom]


def format_compiled(report, compiled: dict) -> str:
    """XLA's figures next to the estimate, per phase, GiB per device."""
    gib = 1024**3
    estimates = phase_estimates(report.estimate)
    head = (f"{'XLA for ' + report.accelerator.name:18s}{'estimate':>9s}{'XLA':>8s}{'est/XLA':>8s}{'capacity':>9s}"
            f"{'args':>7s}{'out':>7s}{'alias':>7s}{'temp':>7s}{'code':>6s}{'resident':>9s}{'compile':>16s}")
    lines = [f"XLA's TPU compiler ({compiler_version()}), GiB per device:", head]
    for phase, result in compiled.items():
        m, xla = result.memory, result.xla_bytes
        seconds = f"{result.seconds:.0f} s"
        if result.cached:
            seconds = "cached" if result.xla_seconds is None else f"cached ({result.xla_seconds:.0f} s)"
        row = f"{phase:18s}{estimates[phase] / gib:9.2f}"
        row += f"{xla / gib:8.2f}{estimates[phase] / xla:8.2f}" if xla else f"{'-':>8s}{'-':>8s}"
        row += f"{report.capacity_bytes / gib:9.2f}"
        if m is not None:
            row += "".join(f"{v / gib:7.2f}" for v in (m.arguments, m.outputs, m.aliased, m.temporaries))
            row += f"{m.code / gib:6.2f}{m.resident / gib:9.2f}"
        else:
            row += f"  {'out of memory' if result.oom else 'compile error'}".ljust(43)
        lines.append(row + f"{seconds:>16s}")
    if report.sampler_workload is not None:
        sampler, trainer = (report.phase_devices(p).split()[1] for p in ("rollout", "update"))
        lines.append(f"compiled per group: the samplers for the sampler group's {sampler} chips, the update for "
                     f"the trainer group's {trainer} chips of {report.accelerator.name}")
    return "\n".join(lines)


def compiler_version() -> str:
    import jax

    return f"jax {jax.__version__}, libtpu {importlib.metadata.version('libtpu')}"
