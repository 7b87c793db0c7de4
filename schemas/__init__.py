"""Pydantic v2 schemas: the run config and its sections (one small file per section)."""
from schemas.loading import build_run_config, config_to_yaml, load_run_config
from schemas.run import DerivedBatch, RunConfig

__all__ = ["RunConfig", "DerivedBatch", "load_run_config", "build_run_config", "config_to_yaml"]
