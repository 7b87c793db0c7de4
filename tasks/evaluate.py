"""The eval's one task: score a model on the held-out problems, write its completions.

Cached like the training phases (tasks/cache.py): the key is the model's fingerprint
plus every config field the scoring reads, records and payloads live under the eval
directory (whose id is kept in it as a training run's is, so a moved eval directory keeps its
scores), and a record whose Parquet file is gone or changed is recomputed.
"""
import re
import time
from pathlib import Path

from prefect import task

from grpo_core.artifacts import SCHEMA_VERSION, write_table
from grpo_core.data import make_prompt_stream
from grpo_core.errors import UserError
from grpo_core.evaluation import completions_table, problem_scores
from grpo_core.sharding import make_mesh
from schemas.manifests import PhaseManifest
from schemas.run import RunConfig
from tasks.cache import PhaseInput, config_digest
from tasks.eval_models import ModelSource, load_eval_model
from tasks.run_dir import run_id_of


def eval_input(out_dir: str, source: ModelSource, cfg: RunConfig, samples: int) -> PhaseInput:
    """Cache key material of scoring `source`: its weights and what the scoring reads."""
    r = cfg.rollout
    sampling = [r.max_new_tokens, r.max_prompt_tokens, r.temperature, r.top_p, r.top_k]
    digest = config_digest(source.fingerprint, cfg.model.dtype, cfg.model.tokenizer, cfg.data, cfg.eval.num_prompts,
                           cfg.eval.max_new_tokens, sampling, cfg.rewards, cfg.train.seed, samples)
    return PhaseInput(run_id=run_id_of(Path(out_dir)), run_dir=out_dir, step=0, phase="eval",
                      config_digest=digest)


def held_out_items(cfg: RunConfig) -> list[dict]:
    """The first eval.num_prompts held-out problems (all data.num_eval when fewer), as in
    training's periodic eval: problems past data.num_eval were trained on."""
    if cfg.data.num_eval == 0:
        raise UserError("data.num_eval is 0: the config holds no problems out of training; set data.num_eval")
    return make_prompt_stream(cfg.data).eval_items[: cfg.eval.num_prompts]


def _mesh(cfg: RunConfig):
    return make_mesh(None if cfg.mesh.shape == "auto" else cfg.mesh.shape.model_dump())


@task(name="score-model", task_run_name="score-{source.name}")
def score_model(phase_input: PhaseInput, source: ModelSource, cfg: RunConfig, samples: int) -> PhaseManifest:
    started = time.perf_counter()
    mesh = _mesh(cfg)
    model = load_eval_model(source, cfg, mesh)
    r, d = cfg.rollout, cfg.data
    table = completions_table(
        model, held_out_items(cfg), rewards=cfg.rewards, samples=samples,
        max_new_tokens=cfg.eval.max_new_tokens or r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
        top_k=r.top_k, seed=cfg.train.seed, system_prompt=d.system_prompt, chat_template=d.chat_template,
        max_prompt_tokens=r.max_prompt_tokens, mesh=mesh,
    )
    rel = f"completions/{re.sub(r'[^A-Za-z0-9._-]+', '-', source.name)}-{source.fingerprint[:12]}.parquet"
    digest = write_table(table, Path(phase_input.run_dir) / rel)
    stats = {name: float(values.mean()) for name, values in problem_scores(table).items()}
    return PhaseManifest(run_id=phase_input.run_id, step=0, phase="eval", path=rel, rows=table.num_rows,
                         sha256=digest, schema_version=SCHEMA_VERSION, stats=stats,
                         seconds=time.perf_counter() - started)
