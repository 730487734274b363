"""The cases of benchmarks/perf_report.py name every size and scalar their kernels
take, and nothing else: a kernel that grows a parameter (the walk's segment states)
must not leave the table with a row that cannot be built. Traced only, not compiled."""

import sys
from pathlib import Path

import pytest

from tilelang.ir.types import ScalarType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import perf_report


@pytest.mark.parametrize("case", perf_report.CASES, ids=lambda case: case.name)
def test_each_case_launches_its_kernel_with_every_size(case):
    fn = case.kernel.specialize(**case.constexprs)
    sizes = {v.name for v in fn.sizes}
    scalars = {p.name for p in fn.params if isinstance(p.type, ScalarType)}
    assert sizes <= set(case.launch), sorted(sizes - set(case.launch))
    assert set(case.launch) <= sizes | scalars, sorted(set(case.launch) - sizes - scalars)
