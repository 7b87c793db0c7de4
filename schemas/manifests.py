"""Phase manifests: the small, cacheable result of each phase task.

The large output lives in the Parquet/JSON file at `path`; Prefect caches only this.
`digest` identifies the content (it feeds the next phase's cache key).
"""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Phase = Literal["rollout", "reward", "advantage", "update", "eval"]


class PhaseManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(description="Run identifier (the run directory's name when the run began, kept in its run_id file).")
    step: int = Field(ge=0, description="Training step the artifact belongs to.")
    phase: Phase = Field(description="Phase that wrote the artifact.")
    path: str = Field(description="Artifact path, relative to the run directory.")
    rows: int = Field(ge=0, description="Rows (sequences) in the artifact; 1 for JSON artifacts.")
    sha256: str = Field(min_length=64, max_length=64, description="sha256 of the artifact file.")
    schema_version: int = Field(ge=1, description="Artifact column layout version.")
    stats: dict[str, float] = Field(default_factory=dict, description="Summary statistics for metrics and the UI.")
    seconds: float = Field(0.0, ge=0.0, description="Compute time of the phase when it ran.")

    @property
    def digest(self) -> str:
        return f"{self.phase}:{self.step}:{self.sha256}"
