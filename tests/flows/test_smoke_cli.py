"""`grpo smoke --dry-run` prints every request and command and creates nothing."""
import json
import subprocess
import sys

from smoke_helpers import ROOT, make_repo  # noqa: E402


def grpo(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "flows.cli.main", *args], capture_output=True, text=True, cwd=cwd)


def test_dry_run_gcp_prints_the_plan(tmp_path):
    sha = make_repo(tmp_path / "src", with_origin=True)
    out = grpo("smoke", "--provider", "gcp", "--repo", str(tmp_path / "src"), "--config", str(tmp_path / "src" / "cfg.yaml"),
               "--dry-run", "--project", "proj", "--zones", "us-east1-d,europe-west4-a", "--set", "train.steps=2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    posts = [line for line in lines if line.startswith("[provision] POST")]
    assert [p.split("/locations/")[1].split("/")[0] for p in posts] == ["us-east1-d", "europe-west4-a"]
    assert '"schedulingConfig": {"spot": true}' in posts[0] and "v6e-ubuntu-2404" in posts[0]
    assert any(sha in line and line.startswith("[sync] gcloud compute tpus tpu-vm ssh") for line in lines)
    assert "launch venv/bin/python -m flows.cli.main train --config repo/cfg.yaml --set train.steps=2 --run-dir run/train" in out.stdout
    assert lines[-1].startswith("[delete] DELETE https://tpu.googleapis.com/v2/projects/proj/locations/")


def test_smoke_refuses_dirty_tree_and_unpushed_commit(tmp_path):
    make_repo(tmp_path / "src")
    cfg = str(tmp_path / "src" / "cfg.yaml")
    unpushed = grpo("smoke", "--provider", "gcp", "--repo", str(tmp_path / "src"), "--config", cfg, "--dry-run")
    assert unpushed.returncode == 2 and "origin" in unpushed.stderr and "Traceback" not in unpushed.stderr
    (tmp_path / "src" / "cfg.yaml").write_text("train: {steps: 9}\n")
    dirty = grpo("smoke", "--provider", "local", "--repo", str(tmp_path / "src"), "--config", cfg, "--dry-run")
    assert dirty.returncode == 2 and "uncommitted changes (cfg.yaml)" in dirty.stderr


def test_bad_flag_values_name_the_flag(tmp_path):
    make_repo(tmp_path / "src", with_origin=True)
    base = ("smoke", "--provider", "gcp", "--repo", str(tmp_path / "src"), "--config", str(tmp_path / "src" / "cfg.yaml"),
            "--project", "proj", "--dry-run")
    for flag, value in (("--zones", ","), ("--zones", "us-east1-d,us-east1"), ("--accelerator", "V6E-8"),
                        ("--job-timeout", "0"), ("--create-timeout", "-1"), ("--queue-wait", "5")):
        out = grpo(*base, flag, value)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert out.stderr.startswith(f"error: {flag}=") and out.stderr.count("\n") == 1


def test_dry_run_queued_prints_the_queued_resource_requests(tmp_path):
    make_repo(tmp_path / "src", with_origin=True)
    out = grpo("smoke", "--provider", "gcp", "--repo", str(tmp_path / "src"), "--config", str(tmp_path / "src" / "cfg.yaml"),
               "--dry-run", "--project", "proj", "--zones", "us-east1-d,europe-west4-a", "--provisioning", "queued",
               "--queue-wait", "1200", "--no-spot")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    posts = [line for line in lines if line.startswith("[provision] POST")]
    assert [p.split("/locations/")[1].split("/")[0] for p in posts] == ["us-east1-d", "europe-west4-a"]
    assert all("/queuedResources?queuedResourceId=grpo-smoke-dryrun " in p for p in posts)
    body = json.loads(posts[0].split(" ", 3)[3])
    assert body["queueingPolicy"] == {"validUntilDuration": "1200s"} and "spot" not in body
    node = body["tpu"]["nodeSpec"][0]
    assert node["parent"] == "projects/proj/locations/us-east1-d" and node["nodeId"] == "grpo-smoke-dryrun"
    assert node["node"]["labels"]["grpo-run"] == "grpo-smoke-dryrun" and node["node"]["acceleratorType"] == "v6e-8"
    assert any(line.startswith("[delete] DELETE") and "queuedResources/grpo-smoke-dryrun?force=true" in line for line in lines)
    bad = grpo("smoke", "--provider", "gcp", "--repo", str(tmp_path / "src"), "--config", str(tmp_path / "src" / "cfg.yaml"),
               "--dry-run", "--project", "proj", "--provisioning", "queued", "--queue-wait", "5")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --queue-wait=5 is not allowed") and "Traceback" not in bad.stderr
