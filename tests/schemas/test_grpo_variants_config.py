"""The GSPO/DAPO/TIS/skip options: defaults, bad combinations in one sentence, cache keys."""
import pytest

from grpo_core.errors import UserError
from schemas import build_run_config, load_run_config
from schemas.run import RunConfig
from tasks.cache import config_digest, dump_without


def test_defaults_leave_the_loss_as_before():
    cfg = build_run_config({})
    assert cfg.loss.importance_sampling_level == "token" and cfg.loss.tis_cap is None
    assert cfg.loss.top_entropy_quantile == 1.0 and cfg.loss.mask_truncated is False
    assert cfg.loss.skip_zero_advantage is True
    assert cfg.rollout.dynamic_sampling.enabled is False and cfg.overlong_penalty is None


def test_options_left_at_their_default_keep_the_cache_keys_of_older_runs():
    # Digests of the default sections before these options existed (same run, same keys on resume).
    # The flow's phase keys leave out the options that change no result (flows/train.py).
    cfg = build_run_config({})
    train, rollout = dump_without(cfg.train, "compilation_cache_dir"), dump_without(cfg.rollout, "weights_layout")
    assert config_digest(cfg.loss, train, False) == "a5fe4dd3510d416c805a29b5084e5a92dd12bb4984a7192ffda28e641a318c75"
    assert config_digest(rollout) == "1414a33e89148852ad4b172fd3ab20cef07131bd55aec3c3c55492ff8fa71325"
    changed = build_run_config({}, ["loss.tis_cap=2", "rollout.dynamic_sampling.enabled=true"])
    assert config_digest(changed.loss, changed.train, False) != config_digest(cfg.loss, cfg.train, False)
    assert config_digest(changed.rollout) != config_digest(cfg.rollout)


@pytest.mark.parametrize("overrides, needles", [
    (["loss.importance_sampling_level=sequence", "loss.agg=seq_mean_token_sum_norm"],
     ["loss.importance_sampling_level=sequence", "seq_mean_token_sum_norm", "loss.agg=seq_mean_token_mean"]),
    (["loss.importance_sampling_level=sequence_token", "loss.agg=seq_mean_token_sum_norm"], ["GSPO"]),
    (["overlong_penalty={cache_tokens: 200}", "rollout.max_new_tokens=128"],
     ["overlong_penalty.cache_tokens (200)", "rollout.max_new_tokens (128)"]),
    (["rollout.dynamic_sampling.enabled=true", "rollout.n=1"], ["rollout.dynamic_sampling", "rollout.n"]),
    (["loss.importance_sampling_level=seq"], ["loss.importance_sampling_level", "sequence_token"]),
    (["loss.tis_cap=0"], ["loss.tis_cap"]),
    (["loss.top_entropy_quantile=0"], ["loss.top_entropy_quantile"]),
    (["rollout.dynamic_sampling.max_rounds=0"], ["rollout.dynamic_sampling.max_rounds"]),
])
def test_bad_combinations_are_one_sentence_naming_the_fields(overrides, needles):
    with pytest.raises(UserError) as info:
        build_run_config({}, overrides)
    message = str(info.value)
    assert "\n" not in message.strip()
    for needle in needles:
        assert needle in message


def test_every_new_option_is_described():
    schema = RunConfig.model_json_schema()
    defs = schema["$defs"]
    loss = defs["LossSection"]["properties"]
    for name in ("importance_sampling_level", "tis_cap", "top_entropy_quantile", "mask_truncated", "skip_zero_advantage"):
        assert loss[name]["description"]
    assert all(p["description"] for p in defs["DynamicSamplingSection"]["properties"].values())
    assert all(p["description"] for p in defs["OverlongPenaltySection"]["properties"].values())
    assert schema["properties"]["overlong_penalty"]["description"]


@pytest.mark.parametrize("name", ["quickstart_dapo.yaml", "quickstart_gspo.yaml"])
def test_variant_configs_differ_from_the_quickstart_only_in_the_algorithm(name):
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    base, variant = (load_run_config(configs / n).model_dump() for n in ("quickstart_cpu.yaml", name))
    changed = {k for k in base if base[k] != variant[k]}
    assert changed and changed <= {"rollout", "loss", "overlong_penalty", "train"}
    assert base["model"] == variant["model"] and base["data"] == variant["data"]


def test_the_train_flows_ui_form_has_the_new_options():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    from flows.train import train_flow

    schema = parameter_schema(train_flow.fn).model_dump_for_openapi()
    loss = schema["definitions"]["LossSection"]["properties"]
    assert loss["importance_sampling_level"]["enum"] == ["token", "sequence", "sequence_token"]
    assert loss["tis_cap"]["description"] and loss["skip_zero_advantage"]["description"]
    assert schema["definitions"]["DynamicSamplingSection"]["properties"]["max_rounds"]["description"]
    config = build_run_config({}, ["rollout.dynamic_sampling.enabled=true", "overlong_penalty={cache_tokens: 16}",
                                   "loss.importance_sampling_level=sequence"]).model_dump(mode="json")
    validate({"config": config}, schema, raise_on_error=True)
    config["loss"]["importance_sampling_level"] = "sentence"
    with pytest.raises(ValidationError, match="importance_sampling_level"):
        validate({"config": config}, schema, raise_on_error=True)
