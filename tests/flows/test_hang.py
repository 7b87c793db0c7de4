"""A hang is an error: a phase that makes no progress for logging.phase_timeout_s ends its
run with one sentence (tasks/watchdog.py), the smoke flow calls it a hang and deletes its
VM, and a rerun resumes. `grpo train` runs as a subprocess, as users run it (slow tier)."""
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from smoke_helpers import ROOT, git, make_repo
from train_helpers import tiny_config

TIMEOUT_S = 8  # above any healthy phase of the tiny model here, compiles included (under 3 s idle)
STAMP = r"(\d\d:\d\d:\d\d\.\d\d\d) \| \w+ +\| [\w.]+ - "


def test_the_timeout_is_in_no_phase_cache_key_and_may_change_on_resume(tmp_path):
    from flows.train import _phase_inputs
    from schemas.loading import config_to_yaml
    from tasks.run_dir import RunPlan, check_same_run

    digests = [_phase_inputs(RunPlan(tiny_config(f"logging.phase_timeout_s={t}"), tmp_path)) for t in (1800, 5, 0)]
    assert digests[0] == digests[1] == digests[2]
    (tmp_path / "config.yaml").write_text(config_to_yaml(tiny_config("logging.phase_timeout_s=5")))
    check_same_run(tmp_path, tiny_config("logging.phase_timeout_s=60"))  # no error


def test_smoke_flow_calls_a_hung_job_a_hang_and_deletes_the_vm(prefect_harness, tmp_path):
    from tasks.watchdog import hang_sentence
    from test_smoke_flow import artifact, smoke

    src = tmp_path / "src"
    make_repo(src)
    (src / "tasks").mkdir()  # the stand-in job hangs under the real watchdog, synced with the commit
    for name in ("__init__.py", "watchdog.py"):
        shutil.copy(ROOT / "tasks" / name, src / "tasks" / name)
    git(src, "add", "tasks")
    git(src, "commit", "-qm", "watchdog")
    state = smoke(tmp_path, overrides=["logging.phase_timeout_s=1"],
                  job_env={"FAKE_JOB_STEP_S": "0.01", "GRPO_FAULT_INJECT": "rollout:2:hang"})
    assert state.is_failed()
    assert re.search(r"smoke failed: hang: worker [01]: step 2 hung in its rollout phase", state.message), state.message
    assert hang_sentence(2, "rollout", 1.0) in state.message and "Traceback" not in state.message
    assert list((tmp_path / "vms").iterdir()) == []
    report = artifact()
    assert "| monitor | failed |" in report and "hang: worker" in report and "| delete | ok |" in report
    # the worker that ended first said it once (the other may have been deleted before its watchdog fired)
    counts = [p.read_text().count(hang_sentence(2, "rollout", 1.0)) for p in (tmp_path / "results").rglob("train.log")]
    assert len(counts) == 2 and 1 in counts and max(counts) == 1, counts


def hang_config(tmp_path: Path) -> Path:
    from test_resume import write_config

    path = write_config(tmp_path, steps=2)
    body = yaml.safe_load(path.read_text())
    body["logging"]["phase_timeout_s"] = TIMEOUT_S
    path.write_text(yaml.safe_dump(body))
    return path


def seconds_between(log: str, first: str, second: str) -> float:
    """Seconds from the log line holding `first` to the one holding `second` (same day)."""
    start, end = (datetime.strptime(re.search(STAMP + re.escape(text), log).group(1), "%H:%M:%S.%f")
                  for text in (first, second))
    return (end - start).total_seconds()


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("phase", ["rollout", "update"])
def test_a_hung_phase_fails_its_step_in_one_sentence_and_the_rerun_finishes(phase, tmp_path):
    from tasks.watchdog import EXIT_CODE, hang_sentence
    from test_resume import train

    config, run_dir = hang_config(tmp_path), tmp_path / "run"
    hung = train(config, run_dir, fault=f"{phase}:1:hang")
    sentence = hang_sentence(1, phase, TIMEOUT_S)
    assert hung.returncode == EXIT_CODE, hung.stdout[-3000:]
    assert hung.stdout.count(sentence) == 1 and "Traceback" not in hung.stdout, hung.stdout[-3000:]
    # from the blocked call to the exit: at most the timeout (it counts from the phase's start) and a poll
    assert seconds_between(hung.stdout, f"injected hang in {phase} of step 1", sentence) <= TIMEOUT_S + 2
    assert (run_dir / "hang.txt").read_text().strip() == sentence
    assert not (run_dir / "summary.json").exists()

    resumed = train(config, run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    assert not (run_dir / "hang.txt").exists()  # a new attempt clears the last hang's note
