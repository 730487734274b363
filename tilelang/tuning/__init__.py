"""The autotuner: `tl.autotune` picks a kernel's constexprs per call shape (tuner.py),
keeping one disk record per (kernel, key, method, config) (records.py) and timing
GPU configs with CUDA events (gpu_timing.py).

A library's own tuner (`tilelang.quant.tuning`) reuses its pieces: `Trial` and
`Decision`, the report (`decision_text`), `Progress`, and the pruning rules
(`machine_errors`, `error_reason`, `resource_problem`); see tuner.py."""

from tilelang.tuning.tuner import (
    Autotuned,
    Decision,
    Progress,
    Trial,
    autotune,
    decision_text,
    error_reason,
    machine_errors,
    resource_problem,
)

__all__ = [
    "Autotuned",
    "Decision",
    "Progress",
    "Trial",
    "autotune",
    "decision_text",
    "error_reason",
    "machine_errors",
    "resource_problem",
]
