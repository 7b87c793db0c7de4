"""Flow parameters for TPU flows (Pydantic, so the Prefect UI renders them as forms) and the
provider factory."""
from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from grpo_core.errors import UserError
from tpu.provider import NodeSpec, Provider

HISTORICAL_ZONES = ("us-east1-d", "us-central1-b", "us-east5-b", "us-central2-b", "us-east5-c", "us-east4-a",
                    "us-east5-a", "us-central1-c", "us-west1-c", "europe-west4-a")
ProviderKind = Literal["local", "gcp"]


class TpuRequest(BaseModel):
    """Which TPU VM to create and where."""

    model_config = ConfigDict(extra="forbid")
    accelerator_type: str = Field("v6e-8", pattern=r"^[a-z0-9-]+$", description="Cloud TPU accelerator type.")
    runtime_version: str = Field("v6e-ubuntu-2404", min_length=1, description="TPU VM software version.")
    zones: list[str] = Field(default_factory=lambda: list(HISTORICAL_ZONES), min_length=1,
                             description="Zones tried in order until one has capacity.")
    spot: bool = Field(True, description="Spot (preemptible) VM.")
    project: str | None = Field(None, description="GCP project; null = $GOOGLE_CLOUD_PROJECT (gcp only).")
    api_endpoint: str | None = Field(None, description="Cloud TPU API endpoint override (gcp; e.g. a test fake).")
    anonymous: bool = Field(False, description="Use anonymous credentials (only for a loopback test API).")
    workers: int = Field(1, ge=1, le=64, description="Worker hosts of the local provider (gcp: from the slice).")
    local_root: str | None = Field(None, description="Local provider's VM directory; null = $GRPO_LOCAL_TPU_ROOT or <tmp>.")


class SmokeTimeouts(BaseModel):
    """Limits of each waiting stage, in seconds."""

    model_config = ConfigDict(extra="forbid")
    ready_s: float = Field(1800, gt=0, le=7200, description="Wait for READY.")
    command_s: float = Field(1800, gt=0, le=7200, description="Each bootstrap/sync/install command.")
    job_s: float = Field(3600, gt=0, le=86400, description="The whole training job.")
    poll_s: float = Field(15, gt=0, le=600, description="Between monitor polls.")


def make_provider(kind: ProviderKind, tpu: TpuRequest) -> Provider:
    if kind == "local":
        from tpu.local import LocalProvider

        return LocalProvider(tpu.local_root, tpu.workers)
    from tpu.gcp import GcpProvider, make_client

    project = tpu.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise UserError("tpu.project is not set; pass the GCP project or export GOOGLE_CLOUD_PROJECT")
    return GcpProvider(project, make_client(tpu.api_endpoint, tpu.anonymous), poll_s=10.0)


def node_name(run_id: str) -> str:
    """A valid TPU node name (lowercase, starts with a letter, <= 63 chars) from a flow run id."""
    return "grpo-smoke-" + re.sub(r"[^a-z0-9]", "", run_id.lower())[:16]


def node_spec(name: str, tpu: TpuRequest, labels: dict[str, str]) -> NodeSpec:
    return NodeSpec(name, tpu.accelerator_type, tpu.runtime_version, tuple(tpu.zones), tpu.spot, labels)
