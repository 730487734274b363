"""The autotuner: `tl.autotune` picks a kernel's constexprs per call shape (tuner.py),
keeping one disk record per (kernel, key, method, config) (records.py) and timing
GPU configs with CUDA events (gpu_timing.py)."""

from tilelang.tuning.tuner import Autotuned, Trial, autotune

__all__ = ["Autotuned", "Trial", "autotune"]
