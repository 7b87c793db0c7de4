"""Moving, copying and extending a run through `grpo train`, as a user does it.

A run's id (part of every phase's cache key) is kept in its run directory, so a moved or
copied run finds its cache; a step's update key holds the step's learning rates, not
train.steps, so raising train.steps continues a run with its finished steps cached, and a
new total that would change a trained step's learning rate is refused before any load.
The runs train the tiny random model; the fast tests only need a run directory's files.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from train_helpers import TINY, tiny_config

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ("checkpoint.asynchronous=false",)  # a kill mid-step leaves the previous step's checkpoint committed


def grpo_train(tmp: Path, run_dir: Path, *sets: str, fault: str | None = None) -> subprocess.CompletedProcess:
    config = tmp / "tiny.yaml"
    config.write_text("# tiny test config\n" + yaml.safe_dump(TINY))
    env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("PREFECT_API_URL", None)
    env.pop("GRPO_FAULT_INJECT", None)
    if fault:
        env["GRPO_FAULT_INJECT"] = fault
    argv = [sys.executable, "-m", "flows.cli.main", "train", "--config", str(config), "--run-dir", str(run_dir)]
    for item in (*SETTINGS, *sets):
        argv += ["--set", item]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def ok(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-4000:]
    assert "Traceback" not in output and result.stderr.strip().count("\n") == 0, output[-4000:]
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def artifacts(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every phase artifact of the run: (mtime in ns, contents) by path under steps/."""
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted((run_dir / "steps").rglob("*")) if p.is_file()}


def cached_by_step(run_dir: Path) -> dict[int, bool]:
    """The `cached` marker of each step's newest metrics record."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["cached"] for r in records}


def params_sha(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["params_sha256"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("move-extend")


@pytest.fixture(scope="module")
def two_steps(runs) -> Path:
    """A finished 2-step run (left as it is: tests copy it)."""
    ok(grpo_train(runs, runs / "two"))
    return runs / "two"


@pytest.fixture(scope="module")
def three_steps_sha(runs) -> str:
    """Final params of an uninterrupted 3-step run."""
    ok(grpo_train(runs, runs / "three", "train.steps=3"))
    return params_sha(runs / "three")


def assert_nothing_to_do(tmp: Path, run_dir: Path, sha: str) -> None:
    before = artifacts(run_dir)
    output = ok(grpo_train(tmp, run_dir))
    assert "nothing to do: 2 steps already trained" in output, output[-4000:]
    assert artifacts(run_dir) == before and params_sha(run_dir) == sha


@pytest.mark.slow
def test_a_moved_finished_run_has_nothing_to_do(two_steps, tmp_path):
    shutil.copytree(two_steps, tmp_path / "first")
    shutil.move(tmp_path / "first", tmp_path / "moved")
    assert_nothing_to_do(tmp_path, tmp_path / "moved", params_sha(two_steps))


@pytest.mark.slow
def test_a_copied_finished_run_has_nothing_to_do(two_steps, tmp_path):
    shutil.copytree(two_steps, tmp_path / "copy")
    assert_nothing_to_do(tmp_path, tmp_path / "copy", params_sha(two_steps))


@pytest.mark.slow
def test_a_moved_unfinished_run_resumes_with_its_finished_steps_cached(three_steps_sha, tmp_path):
    killed = grpo_train(tmp_path, tmp_path / "run", "train.steps=3", fault="rollout:2:kill")
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-4000:]
    shutil.move(tmp_path / "run", tmp_path / "moved")
    before = artifacts(tmp_path / "moved")
    assert before and all(path.startswith(("steps/step-000000", "steps/step-000001")) for path in before)
    ok(grpo_train(tmp_path, tmp_path / "moved", "train.steps=3"))
    after = artifacts(tmp_path / "moved")
    assert {path: after[path] for path in before} == before  # steps 0 and 1: no phase ran again
    assert cached_by_step(tmp_path / "moved") == {0: True, 1: True, 2: False}
    assert params_sha(tmp_path / "moved") == three_steps_sha


@pytest.mark.slow
def test_extending_a_finished_run_trains_only_the_new_step(two_steps, three_steps_sha, tmp_path):
    run_dir = tmp_path / two_steps.name  # a copy under the same name: only the extension is new
    shutil.copytree(two_steps, run_dir)
    before = artifacts(run_dir)
    ok(grpo_train(tmp_path, run_dir, "train.steps=3"))
    after = artifacts(run_dir)
    assert {path: after[path] for path in before} == before
    assert sorted(set(after) - set(before)) == [f"steps/step-000002/{p}" for p in
                                                ("advantage.parquet", "reward.parquet", "rollout.parquet", "update.json")]
    assert cached_by_step(run_dir) == {0: True, 1: True, 2: False}
    assert params_sha(run_dir) == three_steps_sha  # a constant schedule extends exactly


@pytest.mark.slow
def test_a_run_whose_update_keys_are_gone_reuses_its_update_artifacts(two_steps, tmp_path):
    """As a run made under another update key (an older version of it) resumes: the restored
    params are past every update, so each update is its artifact, not a crash."""
    run_dir = tmp_path / two_steps.name
    shutil.copytree(two_steps, run_dir)
    for record in (run_dir / "prefect" / "keys").glob("update-*"):
        record.unlink()
    (run_dir / "summary.json").unlink()
    before = artifacts(run_dir)
    ok(grpo_train(tmp_path, run_dir))
    assert artifacts(run_dir) == before and params_sha(run_dir) == params_sha(two_steps)
    assert_nothing_to_do(tmp_path, run_dir, params_sha(two_steps))


@pytest.mark.slow
def test_extending_a_cosine_run_is_refused_before_anything_loads(tmp_path):
    cosine = "train.optimizer.lr_schedule.type=warmup_cosine"
    ok(grpo_train(tmp_path, tmp_path / "run", cosine))
    before = artifacts(tmp_path / "run")
    refused(grpo_train(tmp_path, tmp_path / "run", cosine, "train.steps=3"), "train.steps=3", "--run-dir")
    assert artifacts(tmp_path / "run") == before
    assert "steps: 2" in (tmp_path / "run" / "config.yaml").read_text()


def trained_looking_run(run_dir: Path, *overrides: str, steps: int = 2) -> None:
    """The files the resume check reads: the run's config and its update artifacts."""
    from schemas.loading import config_to_yaml

    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config_to_yaml(tiny_config(f"train.steps={steps}", *overrides)))
    for step in range(steps):
        (run_dir / "steps" / f"step-{step:06d}").mkdir(parents=True)
        (run_dir / "steps" / f"step-{step:06d}" / "update.json").write_text("{}")


def test_a_new_total_that_changes_trained_learning_rates_or_undoes_steps_is_refused(tmp_path):
    cosine = "train.optimizer.lr_schedule.type=warmup_cosine"
    trained_looking_run(tmp_path / "cosine", cosine)
    stderr = refused(grpo_train(tmp_path, tmp_path / "cosine", cosine, "train.steps=3"), "train.steps=3",
                     "learning rate", "warmup_cosine", "--run-dir")
    assert stderr.count(". ") == 0  # one sentence
    trained_looking_run(tmp_path / "fewer")
    refused(grpo_train(tmp_path, tmp_path / "fewer", "train.steps=1"), "trained 2 steps", "train.steps=1",
            "train.steps=2 or more")
