"""`grpo smoke`: run the tpu-smoke flow from the command line (or print its plan with --dry-run)."""
import argparse
from pathlib import Path


def _relative_config(path: str, repo: Path) -> str:
    from grpo_core.errors import UserError

    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing YAML file with --config")
    try:
        return str(resolved.relative_to(repo))
    except ValueError:
        raise UserError(f"config {path} is outside the repository {repo}; the VM reads it from the synced commit") from None


# The command-line flag behind each field of TpuRequest / SmokeTimeouts, for error messages.
FLAGS = {"accelerator_type": "--accelerator", "runtime_version": "--runtime-version", "zones": "--zones",
         "project": "--project", "workers": "--workers", "local_root": "--local-root", "job_s": "--job-timeout",
         "provisioning": "--provisioning", "queue_wait_s": "--queue-wait", "create_timeout_s": "--create-timeout"}


def _validated(model, **fields):
    """`model(**fields)` (None fields left at their defaults); a bad value is a UserError naming its flag."""
    from pydantic import ValidationError

    from grpo_core.errors import UserError

    try:
        return model(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        raise UserError(f"{FLAGS.get(field, field)}={fields.get(field)!r} is not allowed: {error['msg']}") from None


def _tpu_request(args: argparse.Namespace):
    from tpu.spec import TpuRequest

    zones = [z.strip() for z in args.zones.split(",") if z.strip()] if args.zones is not None else None
    return _validated(TpuRequest, accelerator_type=args.accelerator, runtime_version=args.runtime_version,
                      spot=not args.no_spot, project=args.project, workers=args.workers, local_root=args.local_root,
                      zones=zones, provisioning=args.provisioning, queue_wait_s=args.queue_wait,
                      create_timeout_s=args.create_timeout)


def smoke(args: argparse.Namespace) -> int:
    from tpu import scripts
    from tpu.repo import PROJECT_ROOT, resolve_checkout
    from tpu.spec import SmokeTimeouts

    repo = Path(args.repo).resolve() if args.repo else PROJECT_ROOT
    config = _relative_config(args.config, repo)
    tpu = _tpu_request(args)
    timeouts = _validated(SmokeTimeouts, job_s=args.job_timeout)
    if args.dry_run:
        from tpu.plan import smoke_plan

        checkout = resolve_checkout(repo, args.commit, args.provider)
        train_argv = scripts.train_command(config, scripts.job_overrides(args.overrides, args.compilation_cache_dir))
        print("\n".join(smoke_plan(args.provider, tpu, checkout, train_argv, tpu.project or "$GOOGLE_CLOUD_PROJECT")))
        return 0
    from flows.smoke import smoke_flow
    from tasks.tpu import SmokeFailed

    try:
        result = smoke_flow(provider=args.provider, config=config, overrides=args.overrides, tpu=tpu, commit=args.commit,
                            timeouts=timeouts, preflight=not args.no_preflight, source_repo=str(repo),
                            compilation_cache_dir=args.compilation_cache_dir)
    except SmokeFailed as exc:
        print(f"error: {exc}")
        return 1
    print(f"smoke passed: {result['steps']} steps of {result['commit'][:12]} in {result['zone']}; results in {result['results']}")
    return 0


def register(subparsers) -> None:
    from flows.cli.main import add_config_arguments, positive_int

    parser = subparsers.add_parser("smoke", help="prove a commit trains on a fresh TPU VM (the tpu-smoke flow)")
    parser.add_argument("--provider", choices=("local", "gcp"), default="gcp", help="gcp = Cloud TPU; local = a directory here")
    add_config_arguments(parser)
    parser.add_argument("--commit", help="commit to test (default HEAD; the tree must be clean)")
    parser.add_argument("--dry-run", action="store_true", help="print every API request and command; create nothing")
    parser.add_argument("--accelerator", default=None, help="accelerator type (default v6e-8)")
    parser.add_argument("--runtime-version", default=None, help="TPU VM runtime (default v6e-ubuntu-2404)")
    parser.add_argument("--zones", default=None, help="comma-separated zones, tried in order (default: the historical list)")
    parser.add_argument("--project", default=None, help="GCP project (default $GOOGLE_CLOUD_PROJECT)")
    parser.add_argument("--no-spot", action="store_true", help="on-demand instead of spot")
    parser.add_argument("--provisioning", choices=("direct", "queued"), default=None,
                        help="direct: create in each zone in turn (default); queued: a queued resource per zone, in turn")
    parser.add_argument("--queue-wait", type=int, default=None,
                        help="queued: seconds each zone's queued resource may wait for capacity (default 900)")
    parser.add_argument("--create-timeout", type=float, default=None,
                        help="seconds a create may take before its zone counts as failed (default 1800)")
    parser.add_argument("--workers", type=positive_int, default=None, help="local provider: worker hosts (default 1)")
    parser.add_argument("--local-root", default=None, help="local provider: directory of the VM directories")
    parser.add_argument("--repo", default=None, help="repository to test (default: this checkout)")
    parser.add_argument("--job-timeout", type=float, default=None, help="seconds the training job may run")
    parser.add_argument("--no-preflight", action="store_true", help="skip the memory preflight")
    parser.add_argument("--compilation-cache-dir", default=None, metavar="DIR",
                        help="persistent compilation cache of the training job (a gs:// path for gcp, a folder for "
                             "local); default: the VM's run directory, empty on a fresh VM")
    parser.set_defaults(handler=smoke)
