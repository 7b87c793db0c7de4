"""The GPU suite's code paths on CPU with a tiny model: every figure is computed and sane.

The real run needs a GPU (see benchmarks/RESULTS.md); this only guards its arithmetic and
wiring so the one chance to run it on a lent GPU is not lost to a bug.
"""
import math

from benchmarks import gpu_suite
from benchmarks.op_profile import format_ops, top_ops


def test_suite_runs_end_to_end_on_a_tiny_model(monkeypatch):
    monkeypatch.setattr(gpu_suite, "copy_bandwidth", lambda: 10e9)
    monkeypatch.setattr(gpu_suite, "matmul_flops", lambda: 50e9)
    monkeypatch.setattr(gpu_suite, "hf_generate_peer", lambda *a: {"skipped": "not on CPU in tests"})
    saved = []
    out = gpu_suite.run(True, model_name="tiny-qwen2", sequences=(2, 4), update_batch=2,
                        checkpoint=lambda r: saved.append(dict(r)), profile=True,
                        update_micro_batches=2)
    assert [d["sequences"] for d in out["decode"]] == [2, 4]
    for d in out["decode"]:
        assert d["decode_step_seconds"] > 0 and d["bytes_per_step"] > 0
        assert math.isclose(d["fraction_of_bound"], d["bound_step_seconds"] / d["decode_step_seconds"])
    assert out["decode_layer_scan"]["unroll_layers"] is False and out["decode_layer_scan"]["sequences"] == 4
    assert 0 < out["update"]["mfu_vs_matmul"] and out["update"]["model_tflops"] > 0
    assert set(out["met"]) == {"decode", "update"}
    assert len(saved) >= 4 and "update" not in saved[0]  # partial results written as it goes
    assert out["decode_profile"]["ops"], out["decode_profile"]


def test_top_ops_names_the_compiled_ops():
    import jax
    import jax.numpy as jnp

    a = jnp.ones((256, 256))
    f = jax.jit(lambda a: jnp.tanh(a @ a) @ a)
    profile = top_ops(lambda: f(a).block_until_ready(), reps=2)
    assert profile["total_ms_per_call"] > 0
    assert all(not op["name"].startswith(("ThunkExecutor", "$")) for op in profile["ops"])
    assert "ms" in format_ops(profile)


def test_device_only_summary_keeps_the_gpu_timeline_and_splits_by_kind():
    from benchmarks.op_profile import kernel_class, summarize

    events = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
              {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
              {"ph": "X", "pid": 1, "name": "nvjet_sm90_tst_128x256", "dur": 3000},
              {"ph": "X", "pid": 1, "name": "MemcpyD2D", "dur": 1000},
              {"ph": "X", "pid": 1, "name": "MemcpyD2D", "dur": 1000},
              {"ph": "X", "pid": 1, "name": "input_reduce_fusion_9", "dur": 500},
              {"ph": "X", "pid": 1, "name": "loop_multiply_fusion_5", "dur": 500},
              {"ph": "X", "pid": 2, "name": "cuGraphLaunch", "dur": 9000}]  # host side: left out
    profile = summarize(events, reps=2, device_only=True)
    assert profile["total_ms_per_call"] == 3.0 and profile["kernels_per_call"] == 2.5
    assert profile["classes"] == {"matmul": 1.5, "copy/layout": 1.0, "reduction": 0.25, "other fusion": 0.25}
    assert profile["ops"][0] == {"name": "nvjet_sm90_tst_128x256", "ms_per_call": 1.5, "count_per_call": 0.5}
    assert kernel_class("gemm_fusion_dot_94") == "matmul" and kernel_class("loop_pad_fusion") == "other fusion"
    assert summarize(events, reps=1)["total_ms_per_call"] == 15.0  # all processes without device_only
