"""`grpo export` of tiny Qwen3 and Llama 3 runs: the checks of tests/flows/test_export.py
(newest checkpoint, HF files, transformers' logits and greedy tokens) on those families."""
import pytest

from export_helpers import make_run
from test_export import (  # noqa: F401  (pytest collects the imported tests against this module's `run`)
    exported,
    test_export_holds_the_newest_checkpoint_and_an_hf_directory,
    test_transformers_matches_our_logits_and_greedy_tokens,
)


@pytest.fixture(scope="module", params=["tiny-qwen3", "tiny-llama3"])
def run(request, tmp_path_factory):
    return make_run(tmp_path_factory.mktemp(request.param), request.param)
