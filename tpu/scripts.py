"""Remote command builders: every step of a smoke run as an argv list (pure functions).

Each command runs in the worker's smoke directory (see tpu.provider), laid out as
  venv/  repo/  secrets/wandb_api_key (0600)  run/{pid,exit_code,train.log}  run/train/ (the run dir)
Shell is used only for fixed program text (`bash -c SCRIPT name args...`); user data such
as the commit, config path and overrides travels as separate argv entries, and the W&B key
travels on stdin.
"""
from __future__ import annotations

import json

VENV_PYTHON = "venv/bin/python"
RUN_DIR = "run/train"
LOG_FILE = "run/train.log"
SECRET_FILE = "secrets/wandb_api_key"
TRAIN_COMMAND = ("-m", "flows.cli.main", "train")

# A .pth file in the new venv makes the synced checkout and the controller's own
# site-packages importable: the local "install" is instant and uses the deps already here.
LINK_SITE_PY = (
    "import pathlib, sys, sysconfig\n"
    "paths = [str(pathlib.Path(p).resolve()) for p in sys.argv[1:]]\n"
    "pathlib.Path(sysconfig.get_paths()['purelib'], 'grpo_smoke.pth').write_text('\\n'.join(paths) + '\\n')\n"
)

WRITE_SECRET_SH = "umask 077 && mkdir -p secrets && cat > secrets/wandb_api_key && chmod 600 secrets/wandb_api_key"

# setsid: the job gets its own process group (pid == pgid) so delete can kill all of it.
LAUNCH_SH = (
    "mkdir -p run && rm -f run/pid run/exit_code\n"
    "if [ -f secrets/wandb_api_key ]; then export WANDB_API_KEY=\"$(cat secrets/wandb_api_key)\"; fi\n"
    "setsid nohup bash -c '\"$@\" > run/train.log 2>&1; echo $? > run/exit_code' job \"$@\""
    " < /dev/null > /dev/null 2>&1 &\n"
    "echo $! > run/pid\n"
)

MONITOR_PY = (
    "import json, os, re\n"
    "def read(p):\n"
    "    try:\n"
    "        return open(p, errors='replace').read()\n"
    "    except OSError:\n"
    "        return None\n"
    "pid, code, log = read('run/pid'), read('run/exit_code'), read('run/train.log') or ''\n"
    "alive = False\n"
    "if pid and pid.strip().isdigit():\n"
    "    try:\n"
    "        os.kill(int(pid), 0); alive = True\n"
    "    except OSError:\n"
    "        pass\n"
    "lines = log.splitlines()\n"
    "steps = [int(m.group(1)) for m in map(re.compile(r'(?<![A-Za-z0-9_])step=(\\d+)').search, lines) if m]\n"
    "tb = next((i for i, l in enumerate(lines) if l.startswith('Traceback')), None)\n"
    "oom = next((l for l in lines if 'RESOURCE_EXHAUSTED' in l), '')\n"
    "print(json.dumps({'launched': pid is not None, 'alive': alive,\n"
    "    'exit_code': int(code) if code and code.strip().lstrip('-').isdigit() else None,\n"
    "    'last_step': steps[-1] if steps else 0, 'steps_done': len(set(steps)), 'traceback': '\\n'.join(lines[tb:tb + 40]) if tb is not None else '',\n"
    "    'oom_line': oom[:2000], 'tail': '\\n'.join(lines[-20:])}))\n"
)


def bootstrap_commands(provider_kind: str, local_python: str = "python3") -> list[list[str]]:
    """Create the venv (no conda): local from `local_python`; gcp from the image's python3,
    after installing python3-venv and git."""
    if provider_kind == "local":
        return [[local_python, "-m", "venv", "--without-pip", "venv"]]
    return [
        ["sudo", "apt-get", "update", "-q"],
        ["sudo", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "python3-venv", "git"],
        ["python3", "-m", "venv", "venv"],
    ]


def sync_commands(source: str, commit: str) -> list[list[str]]:
    """Fresh clone of `source` checked out at exactly `commit` (re-runnable)."""
    return [
        ["rm", "-rf", "repo"],
        ["git", "clone", "--quiet", "--no-checkout", source, "repo"],
        ["git", "-C", "repo", "checkout", "--quiet", "--detach", commit],
        ["git", "-C", "repo", "rev-parse", "HEAD"],
    ]


def install_commands(provider_kind: str, site_paths: tuple[str, ...] = ()) -> list[list[str]]:
    """gcp: jax[tpu] + the project into the venv; local: link the checkout and `site_paths`."""
    if provider_kind == "local":
        return [[VENV_PYTHON, "-c", LINK_SITE_PY, "repo", *site_paths]]
    pip = "venv/bin/pip"
    return [
        [pip, "install", "-q", "--upgrade", "pip"],
        [pip, "install", "-q", "jax[tpu]"],
        [pip, "install", "-q", "-e", "repo"],
    ]


def write_secret_command() -> list[str]:
    """Reads the secret from stdin into a 0600 file; the secret is never an argument."""
    return ["bash", "-c", WRITE_SECRET_SH]


def train_command(config: str, overrides: list[str], job_command: tuple[str, ...] = TRAIN_COMMAND,
                  env: dict[str, str] | None = None) -> list[str]:
    """`grpo train --config repo/CONFIG --set ... --run-dir run/train` under the venv python."""
    sets = [arg for item in overrides for arg in ("--set", item)]
    prefix = ["env", *(f"{k}={v}" for k, v in sorted((env or {}).items()))] if env else []
    return [*prefix, VENV_PYTHON, *job_command, "--config", f"repo/{config}", *sets, "--run-dir", RUN_DIR]


def job_overrides(overrides: list[str], compilation_cache_dir: str | None) -> list[str]:
    """The training job's --set overrides: the run's, plus a persistent compilation cache when
    one is given (a fresh VM's run directory starts with an empty one)."""
    cache = [f"train.compilation_cache_dir={compilation_cache_dir}"] if compilation_cache_dir else []
    return [*overrides, *cache]


def launch_command(train_argv: list[str]) -> list[str]:
    """Start `train_argv` in the background with run/pid, run/train.log and run/exit_code."""
    return ["bash", "-c", LAUNCH_SH, "launch", *train_argv]


def monitor_command() -> list[str]:
    """Prints one JSON line: launched, alive, exit_code, last_step, steps_done (distinct step=N lines;
    steps may count from 0 or 1), traceback, oom_line, tail."""
    return [VENV_PYTHON, "-c", MONITOR_PY]


def parse_monitor(stdout: str) -> dict:
    """The monitor's JSON status (the last line of stdout)."""
    return json.loads(stdout.strip().splitlines()[-1])


def kill_command() -> list[str]:
    """Kill the job's process group if it is still running (used before a local delete)."""
    return ["bash", "-c", "[ -f run/pid ] && kill -9 -- -\"$(cat run/pid)\" 2>/dev/null; true"]
