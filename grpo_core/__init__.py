"""grpo_core: all JAX/numpy compute for grpo-flows.

Pure functions over explicit arguments: no Prefect, no environment reads, no
subprocesses. Submodules are imported on demand so `import grpo_core` stays cheap.
"""
