"""`grpo train`: run (or resume) training as Prefect flows.

With no PREFECT_API_URL set, the run gets an embedded local Prefect server that stops
with the command, even when the command is killed (flows/local_server.py).
"""
import argparse
import os
from pathlib import Path

from flows.local_server import quiet_analytics
from grpo_core.errors import writable_dir


def default_run_dir(config_path: str) -> Path:
    return Path("runs") / Path(config_path).stem


def train(args: argparse.Namespace) -> int:
    # The embedded server reports no usage unless the user opts in (its telemetry would also
    # contend for the SQLite file with the run itself).
    quiet_analytics(os.environ)
    # A loaded 2-core laptop can take longer than Prefect's default 20 s to start the embedded server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from schemas import load_run_config

    cfg = load_run_config(args.config, args.overrides)
    import asyncio

    import jax

    from tasks.device_groups import check_cpu_concurrency, split_devices
    from tasks.distributed import initialize_processes

    initialize_processes(cfg.mesh)
    sampler, trainer = split_devices(cfg.mesh.sampler_devices)
    check_cpu_concurrency(sampler, trainer)
    cfg.derive(jax.process_count(), len(trainer))  # batch and split errors before any Prefect start-up
    run_dir = writable_dir(Path(args.run_dir) if args.run_dir else default_run_dir(args.config), "--run-dir")
    if jax.process_index() > 0:
        # Only process 0 reports to the Prefect API; the others run the same flows on
        # their own embedded server (and database) so every process takes the same path.
        os.environ.pop("PREFECT_API_URL", None)
        home = run_dir.absolute() / "prefect" / f"home-p{jax.process_index()}"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
    from tasks.run_dir import check_before_start

    check_before_start(cfg, run_dir)
    from flows.local_server import embedded_server
    from flows.train import claimed_summary, train_flow
    from tasks import warm_start

    # While the embedded server starts, open the session and compile the first step's programs
    # (not for a run whose summary says it is done: the flow checks that and loads nothing).
    if jax.process_count() == 1 and claimed_summary(cfg, run_dir) is None:
        warm_start.start(cfg, run_dir)
    try:
        with embedded_server():
            summary = asyncio.run(train_flow(config=cfg, run_dir=str(run_dir)))
    finally:
        warm_start.discard(run_dir)
    print(summary_line(summary, run_dir))
    return 0


def summary_line(summary: dict, run_dir: Path) -> str:
    """The command's last line: where the run is, its correctness trend and final params."""
    trend = ""
    if "first5_correct_mean" in summary:
        trend = (f"; correctness first 5 steps {summary['first5_correct_mean']:.3f}, "
                 f"last 5 {summary['last5_correct_mean']:.3f}")
    return f"done: {summary['steps']} steps in {run_dir}{trend} (params sha256 {summary['params_sha256'][:16]})"


def register(subparsers) -> None:
    from flows.cli.main import add_config_arguments

    parser = subparsers.add_parser("train", help="train (resumes when --run-dir already holds this run)")
    add_config_arguments(parser)
    parser.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    parser.set_defaults(handler=train)
