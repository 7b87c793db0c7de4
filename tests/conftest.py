"""Test-wide setup.

XLA_FLAGS must be set before jax is imported anywhere: 8 host CPU devices let the
mesh tests run on this machine. Single-device tests simply use device 0.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
