"""validate (baseline comparison), reap-tpu-vms and provision-tpu on the local provider."""
import time

from smoke_helpers import FAKE_JOB, make_repo  # noqa: E402

from tpu.local import LocalProvider
from tpu.provider import OWNER_LABELS, NodeSpec
from tpu.spec import SmokeTimeouts, TpuRequest

FAST = SmokeTimeouts(ready_s=10, command_s=60, job_s=60, poll_s=0.05)


def test_validate_stores_then_compares_with_the_baseline(prefect_harness, tmp_path):
    from flows.validate import validate_flow

    sha = make_repo(tmp_path / "src")
    args = dict(provider="local", config="cfg.yaml", tpu=TpuRequest(local_root=str(tmp_path / "vms")), timeouts=FAST,
                source_repo=str(tmp_path / "src"), job_command=list(FAKE_JOB), job_env={"FAKE_JOB_STEP_S": "0.01"},
                baseline_dir=str(tmp_path / "baselines"), results_dir=str(tmp_path / "results"))
    first = validate_flow(**args)
    assert first["baseline"] is None and first["commit"] == sha
    second = validate_flow(**args)
    assert second == {"commit": sha, "baseline": sha, "verdict": "same as before"}


def test_reaper_deletes_only_old_labelled_vms_and_provision_creates_one(prefect_harness, tmp_path):
    from flows.provision import provision_flow
    from flows.reap import reap_flow

    tpu = TpuRequest(local_root=str(tmp_path / "vms"))
    made = provision_flow(provider="local", tpu=tpu)
    assert made["state"] == "READY" and (tmp_path / "vms" / made["name"]).is_dir()
    local = LocalProvider(tmp_path / "vms")
    local.create(NodeSpec("unlabelled"))
    assert reap_flow(provider="local", tpu=tpu, ttl_hours=1.0) == []
    time.sleep(0.05)
    assert reap_flow(provider="local", tpu=tpu, ttl_hours=1e-6, dry_run=True) == [f"node {made['name']}@local"]
    assert (tmp_path / "vms" / made["name"]).is_dir()
    assert reap_flow(provider="local", tpu=tpu, ttl_hours=1e-6) == [f"node {made['name']}@local"]
    assert sorted(p.name for p in (tmp_path / "vms").iterdir()) == ["unlabelled"]
    assert local.list(OWNER_LABELS) == []
