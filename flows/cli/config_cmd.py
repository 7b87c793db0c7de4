"""`grpo print-config`: the resolved config as YAML, with the derived batch block."""
import argparse


def _device_count() -> tuple[int, int]:
    import jax

    return jax.process_count(), jax.device_count()


def print_config(args: argparse.Namespace) -> int:
    from schemas import config_to_yaml, load_run_config
    from tasks.device_groups import derive_trainer_batch

    cfg = load_run_config(args.config, args.overrides)
    processes, devices = args.processes, args.devices
    if processes is None or devices is None:
        here_processes, here_devices = _device_count()
        processes = processes or cfg.mesh.num_processes or here_processes
        devices = devices or here_devices
    print(config_to_yaml(cfg, derive_trainer_batch(cfg, processes, devices)), end="")  # as `grpo train` derives it
    return 0


def register(subparsers) -> None:
    from flows.cli.main import add_config_arguments, positive_int

    parser = subparsers.add_parser("print-config", help="print the resolved config with the derived batch block")
    add_config_arguments(parser)
    parser.add_argument("--processes", type=positive_int, help="derive for this many JAX processes (default: this machine)")
    parser.add_argument("--devices", type=positive_int, help="derive for this many devices in all, the batch over the trainer's "
                        "(all but mesh.sampler_devices; default: this machine)")
    parser.set_defaults(handler=print_config)
