"""Flow parameters for TPU flows (Pydantic, so the Prefect UI renders them as forms) and the
provider factory."""
from __future__ import annotations

import os
import re
from typing import Annotated, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from grpo_core.errors import UserError
from tpu.provider import NodeSpec, Provider

HISTORICAL_ZONES = ("us-east1-d", "us-central1-b", "us-east5-b", "us-central2-b", "us-east5-c", "us-east4-a",
                    "us-east5-a", "us-central1-c", "us-west1-c", "europe-west4-a")
ProviderKind = Literal["local", "gcp"]
Provisioning = Literal["direct", "queued"]
# A Cloud TPU zone name, e.g. us-east5-b or northamerica-northeast1-a; "local" for the local provider.
ZONE_PATTERN = r"^([a-z]+(-[a-z]+)*[0-9]+-[a-z]|local)$"
Zone = Annotated[str, Field(pattern=ZONE_PATTERN)]


class TpuRequest(BaseModel):
    """Which TPU VM to create and where."""

    model_config = ConfigDict(extra="forbid")
    accelerator_type: str = Field("v6e-8", pattern=r"^[a-z0-9-]+$", description="Cloud TPU accelerator type.")
    runtime_version: str = Field("v6e-ubuntu-2404", min_length=1, description="TPU VM software version.")
    zones: list[Zone] = Field(default_factory=lambda: list(HISTORICAL_ZONES), min_length=1,
                              description="Zones tried in order until one has capacity (e.g. europe-west4-a).")
    spot: bool = Field(True, description="Spot (preemptible) VM.")
    provisioning: Provisioning = Field(
        "direct", description="direct: create the VM in each zone in turn, failing over at once when a zone has no "
                              "capacity. queued: put a queued resource in each zone's queue in turn and wait up to "
                              "queue_wait_s for Cloud TPU to fill it (better odds for scarce types and spot; slower).")
    queue_wait_s: int = Field(900, ge=60, le=7 * 86400,
                              description="queued: seconds a zone's queued resource may wait for capacity before it "
                                          "expires and the next zone is queued.")
    poll_s: float = Field(10, gt=0, le=300, description="Seconds between reads while waiting on Cloud TPU "
                                                         "(create operations, queued resources, READY).")
    create_timeout_s: float = Field(1800, gt=0, le=7200,
                                    description="Seconds a create (or a queued resource's provisioning) may take "
                                                "before the zone counts as failed (timeout) and the next is tried.")
    project: str | None = Field(None, description="GCP project; null = $GOOGLE_CLOUD_PROJECT (gcp only).")
    api_endpoint: str | None = Field(None, description="Cloud TPU API endpoint override (gcp; e.g. a test fake).")
    anonymous: bool = Field(False, description="Use anonymous credentials (only for a loopback test API).")
    workers: int = Field(1, ge=1, le=64, description="Worker hosts of the local provider (gcp: from the slice).")
    local_root: str | None = Field(None, description="Local provider's VM directory; null = $GRPO_LOCAL_TPU_ROOT or <tmp>.")

    @field_validator("zones", mode="before")
    @classmethod
    def _zone_names(cls, zones):
        """Say which entry is wrong in words (the pattern alone would only be quoted back);
        a typo here would otherwise be recorded and listed by every reaper run."""
        for zone in zones if isinstance(zones, list) else []:
            if not isinstance(zone, str) or not re.match(ZONE_PATTERN, zone):
                raise ValueError(f"{zone!r} is not a zone name; use names like europe-west4-a")
        return zones

    def provisioning_note(self) -> str:
        return "direct" if self.provisioning == "direct" else f"queued, up to {self.queue_wait_s} s per zone"


class SmokeTimeouts(BaseModel):
    """Limits of each waiting stage, in seconds."""

    model_config = ConfigDict(extra="forbid")
    ready_s: float = Field(1800, gt=0, le=7200, description="Wait for READY.")
    command_s: float = Field(1800, gt=0, le=7200, description="Each bootstrap/sync/install command.")
    job_s: float = Field(3600, gt=0, le=86400, description="The whole training job.")
    poll_s: float = Field(15, gt=0, le=600, description="Between monitor polls.")


def make_provider(kind: ProviderKind, tpu: TpuRequest, log: Callable[[str], None] | None = None) -> Provider:
    """The provider for `kind`; `log` receives its zone, queue and retry lines (default: the
    `grpo.tpu` logger)."""
    if kind == "local":
        from tpu.local import LocalProvider

        return LocalProvider(tpu.local_root, tpu.workers)
    from tpu.gcp import GcpProvider, make_client
    from tpu.retry import LOGGER

    client = make_client(tpu.api_endpoint, tpu.anonymous)
    return GcpProvider(project_of(kind, tpu), client, poll_s=tpu.poll_s, log=log or LOGGER.info)


def project_of(kind: ProviderKind, tpu: TpuRequest) -> str:
    """The GCP project a run uses ("local" for the local provider)."""
    if kind == "local":
        return "local"
    project = tpu.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise UserError("tpu.project is not set; pass the GCP project or export GOOGLE_CLOUD_PROJECT")
    return project


def node_name(run_id: str) -> str:
    """A valid TPU node name (lowercase, starts with a letter, <= 63 chars) from a flow run id."""
    return "grpo-smoke-" + re.sub(r"[^a-z0-9]", "", run_id.lower())[:16]


def node_spec(name: str, tpu: TpuRequest, labels: dict[str, str]) -> NodeSpec:
    return NodeSpec(name, tpu.accelerator_type, tpu.runtime_version, tuple(tpu.zones), tpu.spot, labels,
                    tpu.provisioning, tpu.queue_wait_s, tpu.create_timeout_s)
