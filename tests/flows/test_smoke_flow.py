"""The tpu-smoke flow end to end on the local provider (stand-in job), and on the gcp
provider against the loopback fake TPU API with a fake ssh runner."""
import json
import os

import pytest

from fake_tpu_api import HISTORICAL_ZONES, FakeTpuApi, historical_zone_errors  # noqa: E402
from smoke_helpers import FAKE_JOB, SECRET, FakeSsh, grep_tree, make_repo  # noqa: E402

from grpo_core.errors import UserError
from tpu.spec import SmokeTimeouts, TpuRequest

FAST = SmokeTimeouts(ready_s=10, command_s=60, job_s=60, poll_s=0.05)


def smoke(tmp_path, **kw):
    from flows.smoke import smoke_flow

    args = dict(provider="local", config="cfg.yaml", tpu=TpuRequest(local_root=str(tmp_path / "vms"), workers=2),
                timeouts=FAST, job_command=list(FAKE_JOB), job_env={"FAKE_JOB_STEP_S": "0.01"}, preflight=False,
                source_repo=str(tmp_path / "src"), results_dir=str(tmp_path / "results"))
    return smoke_flow(**{**args, **kw}, return_state=True)


def artifact(key="tpu-smoke-v6e-8") -> str:
    from prefect.artifacts import Artifact

    return Artifact.get(key).data


def test_local_smoke_passes_and_deletes_the_vm(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    sha = make_repo(tmp_path / "src")
    state = smoke(tmp_path, compilation_cache_dir=str(tmp_path / "xla-cache"))
    assert state.is_completed(), state.message
    result = state.result()
    assert result["commit"] == sha and result["steps"] == 3 and result["zone"] == "local"
    assert [s[0] for s in result["stages"]] == ["check commit", "preflight", "provision", "bootstrap", "sync",
                                                "install", "secrets", "launch", "monitor", "fetch", "delete"]
    report = artifact()
    assert "| monitor | ok |" in report and "3 steps, exit code 0" in report and "| delete | ok |" in report
    assert list((tmp_path / "vms").iterdir()) == []
    logs = list((tmp_path / "results").rglob("train.log"))
    assert len(logs) == 2 and all("wandb_key=present" in p.read_text() for p in logs)
    # every worker's job keeps its compiled programs in the persistent folder
    assert all(f"train.compilation_cache_dir={tmp_path / 'xla-cache'}" in p.read_text() for p in logs)
    metrics = next((tmp_path / "results").rglob("metrics.jsonl")).read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2, 3]
    assert grep_tree(tmp_path, SECRET) == [] and SECRET not in report and SECRET not in repr(result)


@pytest.mark.parametrize("fault, reason, needle", [("oom", "oom", "RESOURCE_EXHAUSTED: Error allocating device buffer"),
                                                    ("raise", "traceback", "Traceback (most recent call last)")])
def test_faulty_job_fails_with_reason_and_excerpt_and_deletes_the_vm(prefect_harness, tmp_path, fault, reason, needle):
    make_repo(tmp_path / "src")
    state = smoke(tmp_path, job_env={"FAKE_JOB_STEP_S": "0.01", "GRPO_FAULT_INJECT": f"rollout:2:{fault}"})
    assert state.is_failed()
    assert f"smoke failed: {reason}" in state.message and needle in state.message
    assert list((tmp_path / "vms").iterdir()) == []
    report = artifact()
    assert "| monitor | failed |" in report and needle in report and "| delete | ok |" in report


def test_dirty_tree_is_refused_before_any_vm(prefect_harness, tmp_path):
    make_repo(tmp_path / "src")
    (tmp_path / "src" / "cfg.yaml").write_text("train:\n  steps: 4\n")
    with pytest.raises(UserError, match="uncommitted changes"):
        smoke(tmp_path).result()
    assert not (tmp_path / "vms").exists()


def test_gcp_smoke_historical_zones_preempted_mid_run(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    sha = make_repo(tmp_path / "src", with_origin=True)
    ssh = FakeSsh()
    monkeypatch.setattr("tpu.gcp.subprocess_runner", ssh)
    with FakeTpuApi(historical_zone_errors(), preempt_after_gets=2) as api:
        tpu = TpuRequest(project="p", api_endpoint=api.endpoint, anonymous=True, zones=list(HISTORICAL_ZONES))
        state = smoke(tmp_path, provider="gcp", tpu=tpu)
        assert api.creates() == list(HISTORICAL_ZONES)
        assert [p for p in api.deletes()] == [p for p in api.deletes() if "europe-west4-a/nodes/grpo-smoke-" in p]
        assert len(api.deletes()) == 1 and api.nodes == {}
    assert state.is_failed() and "smoke failed: preempted" in state.message
    argvs = [argv for argv, _ in ssh.calls]
    assert all("--zone=europe-west4-a" in argv for argv in argvs)
    assert any(f"checkout --quiet --detach {sha}" in argv[-1] for argv in argvs)
    assert [argv[-1] for argv, stdin in ssh.calls if stdin] == [argv[-1] for argv in argvs if "wandb_api_key &&" in argv[-1]]
    assert all(SECRET not in " ".join(argv) for argv in argvs)
    assert "| monitor | failed |" in artifact() and "europe-west4-a" in artifact()


def test_smoke_and_nightly_deployments_take_a_compilation_cache_their_flows_know():
    import importlib
    import inspect
    from pathlib import Path

    import yaml

    spec = yaml.safe_load(Path("deployments/prefect.yaml").read_text())
    for deployment in (d for d in spec["deployments"] if d["name"] in ("smoke-v6e8", "nightly-validation")):
        path, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        assert "compilation_cache_dir" in deployment["parameters"]
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
