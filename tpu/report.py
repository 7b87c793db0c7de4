"""Per-stage timing and outcome of a TPU flow, rendered as the keyed markdown artifact."""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field

from tpu.provider import ZoneAttempt


@dataclass
class Stage:
    name: str
    outcome: str = "running"
    seconds: float = 0.0
    note: str = ""


@dataclass
class StageReport:
    """Stages in the order run; `facts` are key/value lines shown above the table; `zones`
    every zone a create tried, in order (also when one succeeded)."""

    title: str
    stages: list[Stage] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    excerpt: str = ""
    zones: list[ZoneAttempt] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)  # heading -> preformatted text (empty: left out)

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time the block; record ok, or failed with the exception's first line."""
        record = Stage(name)
        self.stages.append(record)
        start = time.monotonic()
        try:
            yield record
        except BaseException as exc:
            record.outcome = "cancelled" if not isinstance(exc, Exception) else "failed"
            record.note = record.note or (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            raise
        else:
            if record.outcome == "running":
                record.outcome = "ok"
        finally:
            record.seconds = time.monotonic() - start

    def skip(self, name: str, note: str) -> None:
        self.stages.append(Stage(name, "skipped", 0.0, note))

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        lines += [f"- **{key}**: {value}" for key, value in self.facts.items()]
        lines += ["", "| stage | outcome | seconds | note |", "|---|---|---:|---|"]
        lines += [f"| {s.name} | {s.outcome} | {s.seconds:.1f} | {_cell(s.note)} |" for s in self.stages]
        if self.zones:
            lines += ["", "## Zones tried", "", "| zone | outcome | seconds | detail |", "|---|---|---:|---|"]
            lines += [f"| {z.zone} | {z.outcome} | {z.seconds:.1f} | {_cell(z.detail)} |" for z in self.zones]
        for heading, text in [*self.sections.items(), ("Excerpt", self.excerpt)]:
            if text:
                lines += ["", f"## {heading}", "", "```", text, "```"]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
