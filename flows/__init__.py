"""Prefect flows and the `grpo` command line.

Importing the package (every grpo command, every deployment a worker loads) first decides
which JAX platforms the process brings up: on a host without TPU chips, an installed
libtpu is not probed (tasks/platforms.py), so CPU runs stay quiet and start as fast.
"""
from tasks.platforms import prefer_cpu_without_tpu

prefer_cpu_without_tpu()
