"""Golden argv tests for the gcloud and remote-command builders."""
from tpu import scripts
from tpu.gcp import node_body, scp_argv, ssh_argv
from tpu.provider import NodeSpec


def test_ssh_argv_golden():
    argv = ssh_argv("smoke-1", "europe-west4-a", "proj", "all", ["git", "-C", "repo", "checkout", "abc; rm -rf /"])
    assert argv == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "smoke-1", "--zone=europe-west4-a", "--project=proj",
        "--worker=all", "--quiet",
        "--command=mkdir -p grpo-smoke && cd grpo-smoke && git -C repo checkout 'abc; rm -rf /'",
    ]


def test_scp_argv_golden():
    assert scp_argv("smoke-1", "us-east1-d", "proj", 2, "run/train.log", "/tmp/out/train.log") == [
        "gcloud", "compute", "tpus", "tpu-vm", "scp", "smoke-1:grpo-smoke/run/train.log", "/tmp/out/train.log",
        "--zone=us-east1-d", "--project=proj", "--worker=2", "--quiet",
    ]


def test_node_body_golden():
    spec = NodeSpec("n", "v6e-8", "v6e-ubuntu-2404", ("z",), True, {"grpo-flows": "smoke"})
    assert node_body(spec) == {"acceleratorType": "v6e-8", "runtimeVersion": "v6e-ubuntu-2404",
                               "schedulingConfig": {"spot": True}, "labels": {"grpo-flows": "smoke"}}


def test_remote_commands_golden():
    assert scripts.sync_commands("https://github.com/o/r.git", "a" * 40) == [
        ["rm", "-rf", "repo"],
        ["git", "clone", "--quiet", "--no-checkout", "https://github.com/o/r.git", "repo"],
        ["git", "-C", "repo", "checkout", "--quiet", "--detach", "a" * 40],
        ["git", "-C", "repo", "rev-parse", "HEAD"],
    ]
    assert scripts.install_commands("gcp")[1] == ["venv/bin/pip", "install", "-q", "jax[tpu]"]
    assert scripts.bootstrap_commands("local", "/usr/bin/python3") == [["/usr/bin/python3", "-m", "venv", "--without-pip", "venv"]]
    assert scripts.train_command("configs/smoke_v6e8.yaml", ["train.steps=3"], env={"B": "2", "A": "1"}) == [
        "env", "A=1", "B=2", "venv/bin/python", "-m", "flows.cli.main", "train",
        "--config", "repo/configs/smoke_v6e8.yaml", "--set", "train.steps=3", "--run-dir", "run/train",
    ]
    assert scripts.job_overrides(["train.steps=3"], None) == ["train.steps=3"]
    assert scripts.job_overrides(["train.steps=3"], "gs://b/xla") == ["train.steps=3", "train.compilation_cache_dir=gs://b/xla"]
    launch = scripts.launch_command(["venv/bin/python", "x.py"])
    assert launch[:2] == ["bash", "-c"] and launch[3:] == ["launch", "venv/bin/python", "x.py"]
    assert scripts.write_secret_command() == ["bash", "-c", scripts.WRITE_SECRET_SH]


def test_parse_monitor_takes_the_last_line():
    assert scripts.parse_monitor('noise\n{"alive": true, "last_step": 2}\n') == {"alive": True, "last_step": 2}


def test_gcp_bootstrap_uses_the_images_python():
    assert scripts.bootstrap_commands("gcp", "/here/.venv/bin/python")[-1] == ["python3", "-m", "venv", "venv"]


def test_monitor_finds_step_lines_inside_prefect_log_lines(tmp_path):
    import subprocess
    import sys

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.log").write_text("03:38 | INFO | Flow run 'x' - step=1 loss=0\nstep=2 loss=0\nnostep=9\n"
                                                   "INFO:prefect.flow_runs:step=3 loss=0\n")
    (tmp_path / "run" / "exit_code").write_text("0\n")
    out = subprocess.run([sys.executable, "-c", scripts.MONITOR_PY], cwd=tmp_path, capture_output=True, text=True)
    status = scripts.parse_monitor(out.stdout)
    assert status["last_step"] == 3 and status["steps_done"] == 3 and status["exit_code"] == 0 and not status["launched"]
