"""Optimizers and learning-rate schedules, by name.

`build_optimizer(cfg, total_steps)` turns the `train.optimizer` config (any object with
the attributes of schemas.train.OptimizerSection) into an optax GradientTransformation.
The defaults build exactly:

    chain(clip_by_global_norm(1.0),
          lion(warmup_cosine_decay_schedule(0, 1e-6, round(0.05 * steps), steps, 0),
               weight_decay=1e-8))

A new optimizer is one `@register_optimizer("name")` entry; the config schema takes its
allowed names from `OPTIMIZERS`.
"""
import optax

from grpo_core.registry import make_registry

OPTIMIZERS, register_optimizer = make_registry("optimizer")
SCHEDULES, register_schedule = make_registry("learning-rate schedule")


def _betas(cfg) -> dict:
    """Only pass the betas the user set, so optax's own defaults stay the defaults."""
    return {k: v for k, v in (("b1", cfg.b1), ("b2", cfg.b2)) if v is not None}


@register_optimizer("lion")
def _lion(lr, cfg) -> optax.GradientTransformation:
    return optax.lion(lr, weight_decay=cfg.weight_decay, **_betas(cfg))


@register_optimizer("adamw")
def _adamw(lr, cfg) -> optax.GradientTransformation:
    return optax.adamw(lr, eps=cfg.eps, weight_decay=cfg.weight_decay, **_betas(cfg))


@register_optimizer("sgd")
def _sgd(lr, cfg) -> optax.GradientTransformation:
    parts = [optax.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay > 0 else []
    parts.append(optax.sgd(lr, momentum=cfg.b1))
    return optax.chain(*parts)


def warmup_steps_for(schedule_cfg, total_steps: int) -> int:
    """Explicit warmup_steps, else round(total_steps * warmup_ratio)."""
    if schedule_cfg.warmup_steps is not None:
        return int(schedule_cfg.warmup_steps)
    return int(round(total_steps * schedule_cfg.warmup_ratio))


@register_schedule("warmup_cosine")
def _warmup_cosine(cfg, total_steps: int) -> optax.Schedule:
    warmup = min(warmup_steps_for(cfg, total_steps), total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=cfg.init_value,
        peak_value=cfg.peak_value,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=cfg.end_value,
    )


@register_schedule("constant")
def _constant(cfg, total_steps: int) -> optax.Schedule:
    """peak_value throughout, after a linear warmup from init_value when warmup > 0."""
    warmup = min(warmup_steps_for(cfg, total_steps), total_steps)
    if warmup == 0:
        return optax.constant_schedule(cfg.peak_value)
    ramp = optax.linear_schedule(cfg.init_value, cfg.peak_value, warmup)
    return optax.join_schedules([ramp, optax.constant_schedule(cfg.peak_value)], [warmup])


def build_lr_schedule(schedule_cfg, total_steps: int) -> optax.Schedule:
    return SCHEDULES[schedule_cfg.type](schedule_cfg, total_steps)


def build_optimizer(optimizer_cfg, total_steps: int) -> optax.GradientTransformation:
    """Optimizer from config: optional global-norm clip, then the named optimizer."""
    lr = build_lr_schedule(optimizer_cfg.lr_schedule, total_steps)
    opt = OPTIMIZERS[optimizer_cfg.name](lr, optimizer_cfg)
    if optimizer_cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(optimizer_cfg.clip_norm), opt)
    return opt
