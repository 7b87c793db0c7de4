"""`rollout:` section. Batch semantics are GLOBAL: see docs/configuration.md "Batch semantics"."""
from typing import Literal

from pydantic import Field

from schemas.base import NEW_OPTION, Section


class DynamicSamplingSection(Section):
    """DAPO's dynamic sampling: groups whose rewards are all equal carry no signal."""

    enabled: bool = Field(False, description="Drop groups whose rewards are all equal and sample "
                          "fresh prompts until batch_size groups with reward spread are collected.")
    max_rounds: int = Field(3, ge=1, le=64, description="Sampling rounds per step at most (the first "
                            "included); each step reserves max_rounds x batch_size prompts of the stream. "
                            "When the cap is hit the batch is filled with dropped groups.")


class RolloutSection(Section):
    batch_size: int = Field(
        8, ge=1, le=65536, description="GLOBAL prompts per training step, across all processes."
    )
    n: int = Field(4, ge=1, le=1024, description="Completions sampled per prompt (the GRPO group size).")
    max_new_tokens: int = Field(128, ge=1, le=32768, description="Sampled tokens per completion at most.")
    max_prompt_tokens: int = Field(256, ge=1, le=131072, description="Prompt tokens at most; longer prompts are cut from the left.")
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1 = off.")
    top_k: int = Field(0, ge=0, description="Top-k sampling; 0 = off.")
    allow_padding: bool = Field(
        False,
        description="When the batch does not divide across processes/devices, pad it up (and log "
        "the padded numbers) instead of failing.",
    )
    weights_layout: Literal["auto", "replicated", "tp", "fsdp"] = Field(
        "auto",
        description="Where the sampler's copy of the weights lives during rollout (resharded once per step, "
        "never per token): 'replicated' = every device holds all the weights (no weight traffic between "
        "devices in the decode loop); 'tp' = heads, MLP and vocabulary split over the devices of a host "
        "(activations all-reduced per layer); 'fsdp' = the training layout (weights all-gathered per layer "
        "per token); 'auto' = of replicated and tp, the ones that fit beside the training state and the KV "
        "cache, on a TPU the one with the shorter predicted decode step (HBM and ICI rates of the chip), "
        "elsewhere replicated first; fsdp when neither fits (and on devices that report no memory limit, "
        "e.g. CPU).",
    )
    prompt_width: Literal["batch", "run_max"] = Field(
        "batch",
        description="How wide the sampler and the update pad prompts: 'batch' = to the bucket of the batch's own "
        "longest prompt (a batch of shorter prompts gets a narrower program, compiled once per new width); "
        "'run_max' = never narrower than the widest bucket any earlier step of the run used, so a run compiles "
        "one sampler and one update program per width it grows through and none when a batch happens to be "
        "shorter (each a minutes-long compile on a TPU), for up to one bucket of extra padding on such "
        "batches. A resumed run rebuilds the width from its rollout artifacts, so it samples what an "
        "uninterrupted run samples.",
        json_schema_extra=NEW_OPTION,
    )
    max_staleness: int = Field(
        0, ge=0, le=1,
        description="Steps the sampler's params may lag the trainer's: 0 = synchronous (the rollout of step k "
        "samples with the params step k's update starts from); 1 = the rollout of step k samples with the "
        "params step k-1's update started from, so it can run while step k-1 updates (one step off-policy; "
        "loss.tis_cap then weights each token by min(pi_trainer / pi_sampler, tis_cap), which corrects for "
        "the lag). Every rollout records the params version it sampled with, and its cache key holds it.",
        json_schema_extra=NEW_OPTION,
    )
    dynamic_sampling: DynamicSamplingSection = Field(
        default_factory=DynamicSamplingSection, description="DAPO dynamic sampling.",
        json_schema_extra=NEW_OPTION,
    )
