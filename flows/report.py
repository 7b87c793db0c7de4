"""End-of-run reports: summary.json, the reward-curve PNG and Prefect artifacts."""
import json

import numpy as np

from grpo_core.artifacts import atomic_write_bytes

TABLE_COLUMNS = ("step", "reward_mean", "reward_gsm8k_correct_mean", "pass@1", "pass@k", "mean@k",
                 "zero_std_group_fraction", "loss", "kl", "entropy", "grad_norm", "lr",
                 "completion_length_mean", "truncation_rate", "rollout_tokens_per_s", "step_seconds",
                 "orchestration_overhead_frac", "eval_accuracy", "cached")


def reward_curve_png(records: dict[int, dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(records)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("reward_mean", "total reward"), ("reward_gsm8k_correct_mean", "correctness")):
        values = [records[s].get(name) for s in steps]
        if any(v is not None for v in values):
            ax.plot(steps, values, marker="o", markersize=3, label=label)
    correct = [records[s].get("reward_gsm8k_correct_mean") for s in steps]
    if len(steps) >= 5 and None not in correct:
        window = np.convolve(correct, np.ones(5) / 5, mode="valid")
        ax.plot(steps[4:], window, linewidth=2.5, label="correctness, 5-step mean")
    evals = [(s, records[s]["eval_accuracy"]) for s in steps if "eval_accuracy" in records[s]]
    if evals:
        ax.plot(*zip(*evals), marker="s", label="eval accuracy (greedy)")
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(summary: dict) -> str:
    final = summary.get("final_metrics", {})
    rows = [f"| {k} | {v:.4g} |" for k, v in final.items() if isinstance(v, float)]
    trend = ""
    if "first5_correct_mean" in summary:
        trend = (f"Correctness reward: first 5 steps {summary['first5_correct_mean']:.3f}, "
                 f"last 5 steps {summary['last5_correct_mean']:.3f}.\n\n")
    return (f"# Run {summary['run_id']}\n\n{summary['steps']} steps in {summary['wall_seconds']:.1f} s. "
            f"Final params sha256 `{summary['params_sha256'][:16]}…`.\n\n{trend}"
            "| metric (last step) | value |\n|---|---|\n" + "\n".join(rows) + "\n")


def write_reports(session, records: dict[int, dict], summary: dict, artifact_key) -> None:
    run_dir = session.run_dir
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=1, sort_keys=True).encode())
    reward_curve_png(records, run_dir / "reward_curve.png")
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    table = [{c: records[s].get(c) for c in TABLE_COLUMNS} for s in sorted(records)]
    create_table_artifact(table, key=artifact_key(session.run_id, "metrics"), description="per-step metrics", _sync=True)
    create_markdown_artifact(_markdown(summary), key=artifact_key(session.run_id, "summary"),
                             description="training run summary", _sync=True)
