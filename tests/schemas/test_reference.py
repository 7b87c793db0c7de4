"""The configuration reference page is generated from the schema and kept current."""
import subprocess
import sys
from pathlib import Path

from schemas import reference
from schemas.rollout import RolloutSection
from schemas.run import RunConfig

REPO = Path(__file__).resolve().parents[2]


def test_committed_page_is_current():
    assert reference.is_current(), "run `python -m schemas.reference` and commit docs/reference/configuration.md"


def test_page_lists_every_field_with_its_description():
    page = reference.render()
    assert "| `rollout.weights_layout` | str (one of) | `\"auto\"` |  | `auto`, `replicated`, `tp`, `fsdp` |" in page
    assert "| `rewards[].weight` | float | `1.0` | ≥ -100.0, ≤ 100.0 |" in page
    assert "`mesh.shape.tp`" in page and "`overlong_penalty.cache_tokens`" in page
    for name, field in RolloutSection.model_fields.items():
        assert f"| `rollout.{name}` |" in page
        assert field.description.split("<")[0] in page


def test_changed_description_makes_the_page_stale(monkeypatch, tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text(reference.render(), encoding="utf-8")
    assert reference.main(["--check", "--output", str(page)]) == 0
    field = RunConfig.model_fields["loss"].annotation.model_fields["tis_cap"]
    monkeypatch.setattr(field, "description", field.description + " Changed.")
    assert not reference.is_current(page)
    assert reference.main(["--check", "--output", str(page)]) == 1


def test_check_command_names_the_fix(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text("# stale\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "schemas.reference", "--check", "--output", str(page)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "out of date" in proc.stderr and "python -m schemas.reference" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert page.read_text(encoding="utf-8") == "# stale\n"
