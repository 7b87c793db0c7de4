"""Weights & Biases logging for process 0 (online | offline | disabled).

The API key comes from WANDB_API_KEY or a Prefect Secret block named `wandb-api-key`;
it is handed to wandb through this process's environment only: never argv, never a
log line, never a file of ours.
"""
import os

from grpo_core.errors import UserError

SECRET_BLOCK = "wandb-api-key"


def _api_key() -> str | None:
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        from prefect.blocks.system import Secret

        return Secret.load(SECRET_BLOCK, _sync=True).get()  # a coroutine otherwise, inside the async flow
    except Exception:  # no server, no block: treated as "no key"
        return None


class WandbSink:
    def __init__(self, cfg, run_dir):
        self.run = None
        settings = cfg.logging.wandb
        if settings.mode == "disabled":
            return
        if settings.mode == "online":
            key = _api_key()
            if not key:
                raise UserError(
                    "logging.wandb.mode=online needs WANDB_API_KEY in the environment or a Prefect Secret "
                    f"block named {SECRET_BLOCK}; set one, or use logging.wandb.mode=offline"
                )
            os.environ["WANDB_API_KEY"] = key
        import wandb

        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode=settings.mode, project=settings.project, entity=settings.entity,
            name=settings.run_name or run_dir.resolve().name, dir=str(run_dir), resume="allow",
            id=_run_id(run_dir), config=cfg.model_dump(mode="json"),
        )

    def __bool__(self) -> bool:
        return self.run is not None

    def log(self, record: dict, step: int) -> None:
        self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)

    def summary(self, summary: dict) -> None:
        for key, value in summary.items():
            if isinstance(value, (int, float, str)):
                self.run.summary[key] = value

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _run_id(run_dir) -> str:
    """A stable W&B run id per run directory, so a resumed run continues the same W&B run."""
    import hashlib

    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
