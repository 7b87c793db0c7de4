"""The phase cache's key records: relative payload names, and old absolute ones still read."""
import json

from prefect.results import ResultStore
from prefect.serializers import JSONSerializer

from grpo_core.artifacts import SCHEMA_VERSION, sha256_file
from schemas.manifests import PhaseManifest
from tasks.cache import _stores, cached_manifest, storage_dirs


def write_record(run_dir, key: str) -> PhaseManifest:
    artifact = run_dir / "steps" / "step-000000" / "update.json"
    artifact.parent.mkdir(parents=True)
    artifact.write_text('{"loss": 0.5}')
    manifest = PhaseManifest(run_id=run_dir.name, step=0, phase="update", path="steps/step-000000/update.json",
                             rows=1, sha256=sha256_file(artifact), schema_version=SCHEMA_VERSION)
    keys, results = _stores(run_dir)
    ResultStore(metadata_storage=keys, result_storage=results, serializer=JSONSerializer()).write(manifest, key=key)
    return manifest


def test_key_records_name_their_payload_relative_to_the_results_folder(tmp_path):
    run_dir = tmp_path / "run"
    manifest = write_record(run_dir, "update-000000-abc")
    record = json.loads((storage_dirs(run_dir)["keys"] / "update-000000-abc").read_text())
    assert record["storage_key"] == "update-000000-abc"
    assert cached_manifest("update-000000-abc", run_dir) == manifest


def test_a_record_with_an_absolute_path_from_another_folder_still_reads(tmp_path):
    # A record that holds the payload's absolute path in the run's old place.
    run_dir = tmp_path / "moved" / "run"
    manifest = write_record(run_dir, "update-000000-abc")
    path = storage_dirs(run_dir)["keys"] / "update-000000-abc"
    record = json.loads(path.read_text())
    record["storage_key"] = str(tmp_path / "elsewhere" / "run" / "prefect" / "results" / "update-000000-abc")
    path.write_text(json.dumps(record))
    assert cached_manifest("update-000000-abc", run_dir) == manifest
