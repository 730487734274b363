"""`tilelang.quant.choice`'s split-K against the static performance report: at a few
decode shapes, the split `choose` picks is predicted within 10% of the best split's
prediction (each split's kernels compiled and reported here; predictions compared,
never timings). The split-K workspace (f32 partials written and read back) is what
makes more slices cost more. No GPU is needed; NVRTC and the disassembler are."""

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest

from tilelang.quant.choice import kernel_calls
from tilelang.quant.matmul import _prepared
from tilelang.runtime.launch_facts import size_facts

# benchmarks/quant_matmul.py's random packed codes (no quantizing), under its own name:
# examples/quant_matmul.py may already be `quant_matmul` in this session.
_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "quant_matmul.py"
_spec = importlib.util.spec_from_file_location("benchmark_quant_matmul", _BENCH)
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
weight = _bench.weight

needs_disassembler = pytest.mark.usefixtures("disassembler")


def _predicted(ops, m: int, choice, arch: str) -> float:
    seconds = 0.0
    for call in kernel_calls(ops, m, choice, False):
        facts = {**size_facts(call.sizes), **call.values}
        compiled = call.kernel.compile(assume=facts, target=arch, **call.constexprs)
        seconds += compiled.perf(**call.sizes).predicted_seconds
    return seconds


@needs_disassembler
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    "name, k, n, m, arch",
    [
        ("u4", 4096, 4096, 64, "sm_90a"),  # split 8 (7.90 us) was chosen over 3 (4.77 us)
        ("u8", 4096, 4096, 64, "sm_90a"),
        ("u4", 4096, 4096, 64, "sm_90"),  # the small-batch path
    ],
)
def test_the_chosen_split_is_predicted_near_the_best_split(name, k, n, m, arch):
    ops, choice, _ = _prepared(weight(name, k, n), m, "f16", arch, False, target=arch)
    tiles = math.ceil(k / choice.bk)
    splits = {-(-tiles // -(-tiles // s)) for s in (1, 2, 3, 4, 6, 8)}
    predicted = {
        s: _predicted(ops, m, dataclasses.replace(choice, split_k=s), arch) for s in splits
    }
    chosen = predicted.get(choice.split_k) or _predicted(ops, m, choice, arch)
    assert chosen <= 1.1 * min(predicted.values()), (choice.split_k, predicted)
