"""The GPU self-check (benchmarks/gpu_check.py) without a GPU: the no-GPU run lists
everything and writes its reports; the comparisons, floors, report writer, pytest-output
readers and the worker orchestration are checked here; every example case is rehearsed
with the CPU backend standing in for the GPU."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import gpu_attention  # noqa: E402
import gpu_check  # noqa: E402
import gpu_common  # noqa: E402
import gpu_examples  # noqa: E402
import gpu_launch  # noqa: E402
import gpu_quant_matmul  # noqa: E402

import tilelang as tl  # noqa: E402


def machine_has_gpu() -> bool:
    return bool(shutil.which("nvidia-smi")) or Path("/dev/nvidia0").exists()


# --------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def no_gpu_run(tmp_path_factory):
    """The driver in a subprocess, as `make gpu-check` runs it: the no-GPU path on a
    machine without one, --dry-run on a machine with one."""
    out = tmp_path_factory.mktemp("gpu-report")
    command = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--out", str(out)]
    if machine_has_gpu():
        command.append("--dry-run")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    return done, out


def test_without_a_gpu_it_says_so_lists_everything_and_exits_0(no_gpu_run):
    done, _ = no_gpu_run
    assert done.returncode == 0, done.stdout + done.stderr
    if not machine_has_gpu():
        assert "NO GPU on this machine" in done.stdout
    assert "Nothing was run" in done.stdout
    for example in sorted((ROOT / "examples").glob("*.py")):
        assert f"examples/{example.name}" in done.stdout, example.name
    for part in gpu_check.PART_KEYS:
        assert f"[{part}]" in done.stdout
    gpu_tests = gpu_check.gpu_tests_by_ast()
    assert gpu_tests
    for test in gpu_tests:
        assert test.removesuffix("[...]") in done.stdout, test
    assert f"budget {gpu_check.PARTS[0].budget_s:.0f} s" in done.stdout  # pytest's
    assert f"capped at {gpu_check.TOTAL_BUDGET_S:.0f} s" in done.stdout
    assert f"timeout_s={gpu_check.RUN_TIMEOUT_S:.0f}" in done.stdout
    assert "quant_matmul u4 m=1 k=4096 n=4096" in done.stdout
    assert "matmul f16 4096x4096 @ 4096x4096" in done.stdout
    assert "vector_add f32 n=268435456" in done.stdout
    assert "selective_scan B=8 Dm=2048 N=16 L=2048 vs bandwidth floor" in done.stdout


def test_the_no_gpu_run_writes_both_reports(no_gpu_run):
    _, out = no_gpu_run
    report = json.loads((out / "gpu-report.json").read_text())
    markdown = (out / "gpu-report.md").read_text()
    expected = "dry run" if machine_has_gpu() else "no GPU"
    assert report["status"] == expected
    assert f"**Status: {expected.upper()}**" in markdown
    assert report["environment"]["python"] == sys.version.split()[0]
    assert report["git"]["commit"]
    assert {p["key"] for p in report["plan"]} == set(gpu_check.PART_KEYS)
    listed = {item["name"] for part in report["plan"] for item in part["items"]}
    assert any(name.startswith("examples/cumsum.py") for name in listed)
    assert sorted(report["examples"]) == sorted(
        f"examples/{p.name}" for p in (ROOT / "examples").glob("*.py")
    )
    assert "## What a GPU run would do" in markdown


def test_the_parts_budgets_fit_the_cap_with_the_probe():
    parts = sum(part.budget_s for part in gpu_check.PARTS)
    assert parts + gpu_check.PROBE_RESERVE_S <= gpu_check.TOTAL_BUDGET_S


def test_the_device_call_fits_the_tool_and_leaves_time_to_rerun_it():
    # The call's limit covers the capped check and what make does around it; two such
    # calls and the machine's start fit one session's device time.
    assert gpu_check.TOTAL_BUDGET_S + 20 <= gpu_check.RUN_TIMEOUT_S <= gpu_check.DEVICE_COMMAND_S
    session = 2 * gpu_check.RUN_TIMEOUT_S + gpu_check.MACHINE_START_S
    assert session <= gpu_check.DEVICE_SESSION_S
    assert (gpu_check.DEVICE_COMMAND_S, gpu_check.DEVICE_SESSION_S) == (600, 900)


def test_unknown_parts_are_refused():
    with pytest.raises(SystemExit):
        gpu_check.parse_arguments(["--parts", "examples,nonsense"])


# --------------------------------------------------------------------------- comparisons


def test_exact_comparison_is_bitwise():
    a = np.array([1.0, -0.0, np.nan], np.float32)
    assert gpu_common.compare(a, a.copy()).bit_exact
    zero = np.array([1.0, 0.0, np.nan], np.float32)
    signed = gpu_common.compare(a, zero, "exact")
    assert not signed.ok and signed.mismatches == 1 and "(1,)" in signed.detail
    assert gpu_common.compare(a, zero, "abs", 0.0).ok  # -0.0 == 0.0 as values
    ints = np.arange(6, dtype=np.int32).reshape(2, 3)
    off = ints.copy()
    off[1, 2] += 1
    result = gpu_common.compare(off, ints)
    assert not result.ok and result.max_abs == 1 and "(1, 2)" in result.detail
    assert not gpu_common.compare(ints.astype(np.int64), ints).ok  # dtype differs
    assert not gpu_common.compare(ints[:1], ints).ok  # shape differs


def test_tolerances_absolute_and_relative():
    want = np.array([100.0, -50.0, 1.0], np.float32)
    got = want + np.array([0.0, 0.0, 0.05], np.float32)
    assert gpu_common.compare(got, want, "abs", 0.06).ok
    assert not gpu_common.compare(got, want, "abs", 0.04).ok
    # relative to the largest magnitude (100): 0.05 / 100
    assert gpu_common.compare(got, want, "rel", 6e-4).ok
    over = gpu_common.compare(got, want, "rel", 4e-4)
    assert not over.ok and "OVER" in over.describe()
    nan = gpu_common.compare(np.array([np.nan]), np.array([1.0]), "abs", 10.0)
    assert not nan.ok
    with pytest.raises(gpu_common.CheckFailed, match="the thing"):
        gpu_common.require(over, "the thing")


# --------------------------------------------------------------------------- floors


@pytest.mark.parametrize(
    "name, card, bandwidth",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 3.35e12),
        ("NVIDIA H100 PCIe", "H100 PCIe", 2.0e12),
        ("NVIDIA H100 NVL", "H100 NVL", 3.9e12),
        ("NVIDIA H200", "H200 SXM", 4.8e12),
        ("NVIDIA H200 NVL", "H200 NVL", 4.8e12),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM", 2.039e12),
    ],
)
def test_the_peak_table(name, card, bandwidth):
    peak = gpu_common.card_peak(name)
    assert peak is not None and peak.card == card
    assert peak.dram_bytes_per_s == pytest.approx(bandwidth)


@pytest.mark.parametrize(
    "name",
    ["NVIDIA GH200 480GB", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA GeForce RTX 4090", ""],
)
def test_cards_outside_the_table_are_measured(name):
    assert gpu_common.card_peak(name) is None


def test_the_floor_is_the_longer_of_bytes_and_flops():
    assert gpu_common.floor_seconds(3.35e9, 3.35e12) == pytest.approx(1e-3)
    # 2 * 4096^3 flops at 989 TFLOP/s beats 100 MB at 3.35 TB/s
    flops = 2 * 4096**3
    assert gpu_common.floor_seconds(1e8, 3.35e12, flops, 989e12) == pytest.approx(flops / 989e12)
    assert gpu_common.floor_seconds(1e8, 3.35e12, flops, None) == pytest.approx(1e8 / 3.35e12)


# --------------------------------------------------------------------------- reports


def fake_timing(seconds):
    return gpu_common.Timing(seconds, seconds, 20, 0.5, 30e-6, "CUDA events")


def fake_report():
    ours, theirs = fake_timing(2e-3), fake_timing(1e-3)
    record = gpu_common.benchmark_record(
        shape="n=1000 f32",
        ours=gpu_common.measurement("tilelang vector_add", 2e-3, 12e6),
        baseline=gpu_common.measurement("torch x + y", 1e-3, 12e6),
        floor=gpu_common.measurement("peak DRAM 3.35 TB/s (H100 SXM)", 12e6 / 3.35e12, 12e6),
        timing=ours,
        baseline_timing=theirs,
        check="bit-exact with torch x + y",
    )
    results = [
        {"name": "vector_add f32 n=1000", "status": "pass", "message": "", "data": record},
        {"name": "broken case", "status": "fail", "message": "it differs: 3 of 9", "data": {}},
        {"name": "late case", "status": "skip", "message": "would overrun", "data": {}},
    ]
    part = gpu_check.Part("bench-memory", "memory", 40.0, None)
    parts = [gpu_check.finish_part(part, 40.0, 0.0, results)]
    return {
        "status": "fail",
        "summary": gpu_check.summarize(parts),
        "date": "2026-12-01T00:00:00+00:00",
        "command": "make gpu-check",
        "budget_s": 470,
        "duration_s": 12.0,
        "git": {"commit": "abc123", "dirty": False},
        "environment": {
            "device_name": "NVIDIA H100 80GB HBM3",
            "nvidia_smi": {"driver": "580.65.06"},
            "nvrtc": "13.0",
            "packages": {"torch": "2.11.0+cu130", "triton": "3.6.0"},
            "torch_cuda_version": "13.0",
            "python": "3.12.3",
        },
        "parts": parts,
    }


def test_the_report_writer(tmp_path):
    report = fake_report()
    md_path, json_path = gpu_check.write_reports(report, tmp_path / "out")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report, default=str))
    md = md_path.read_text()
    assert "**Status: FAIL**" in md
    for text in ("NVIDIA H100 80GB HBM3", "580.65.06", "2.11.0+cu130", "3.6.0", "abc123"):
        assert text in md
    assert "| bench-memory | FAIL | 1 | 1 | 0 | 1 |" in md
    assert "it differs: 3 of 9" in md  # the failure's message
    assert "late case: would overrun" in md
    row = next(line for line in md.splitlines() if line.startswith("| n=1000 f32"))
    assert "2.000 ms, 6 GB/s" in row and "torch x + y: 1.000 ms, 12 GB/s" in row
    assert "2.00x" in row and "% |" in row and "30 us" in row
    assert "## For docs/benchmarks.md" in md
    assert "| 2026-12-01 | NVIDIA H100 80GB HBM3 | `make gpu-check` | n=1000 f32 |" in md
    assert report["summary"] == "bench-memory 1/3 passed, 1 failed, 1 skipped"


def test_parse_junit_and_verbose_output(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        textwrap.dedent(
            """\
            <testsuites><testsuite>
              <testcase classname="tests.test_gpu_runtime" name="test_a[u4]"
                        file="tests/test_gpu_runtime.py" time="1.5"/>
              <testcase classname="tests.test_gpu_runtime" name="test_b" time="0.1">
                <failure message="assert 1 == 2">long traceback</failure></testcase>
              <testcase classname="tests.test_x" name="test_c" time="0">
                <skipped message="needs a CUDA device"/></testcase>
            </testsuite></testsuites>
            """
        )
    )
    results = gpu_check.parse_junit(junit)
    assert [r["name"] for r in results] == [
        "tests/test_gpu_runtime.py::test_a[u4]",
        "tests/test_gpu_runtime.py::test_b",
        "tests/test_x.py::test_c",
    ]
    assert [r["status"] for r in results] == ["pass", "fail", "skip"]
    assert "assert 1 == 2" in results[1]["message"] and "long traceback" in results[1]["message"]
    text = (
        "tests/test_gpu_runtime.py::test_a[u4] PASSED  [ 50%]\n"
        "tests/test_gpu_runtime.py::test_b FAILED  [100%]\n"
        "FAILED tests/test_gpu_runtime.py::test_b - assert\n"
    )
    verbose = gpu_check.parse_pytest_verbose(text)
    assert [(r["name"], r["status"]) for r in verbose] == [
        ("tests/test_gpu_runtime.py::test_a[u4]", "pass"),
        ("tests/test_gpu_runtime.py::test_b", "fail"),
    ]


def test_gpu_tests_are_found_without_importing_them():
    found = gpu_check.gpu_tests_by_ast()
    assert "tests/test_gpu_runtime.py::test_integer_examples_on_the_gpu_are_bit_exact" in found
    assert not any("test_compile_for_a_gpu_without_one" in t for t in found)


def test_pytest_collects_only_the_files_that_mark_gpu_tests():
    files = gpu_check.gpu_test_files()
    assert "tests/test_gpu_runtime.py" in files
    assert "tests/test_dtypes.py" not in files
    assert all((ROOT / f).read_text().count("mark.gpu") for f in files)


def test_has_gpu_reads_the_probe():
    assert gpu_check.has_gpu({"torch_cuda": True, "device_name": "X"}) == (True, "X")
    gpu, why = gpu_check.has_gpu({"torch_error": "no torch", "nvidia_smi": {}})
    assert not gpu and "no torch" in why and "nvidia-smi: not found" in why
    gpu, why = gpu_check.has_gpu({"torch_cuda": False, "nvidia_smi": {"name": "NVIDIA H100"}})
    assert gpu and "unusable from Python" in why  # a broken setup must not pass as "no GPU"


# --------------------------------------------------------------------------- orchestration


FAKE_CASES = textwrap.dedent(
    """\
    from gpu_common import Case, CheckFailed, Skip

    def ok(context):
        return {"summary": "fine"}

    def wrong(context):
        raise CheckFailed("differs")

    def skipped(context):
        raise Skip("no torch")

    def cases():
        return [Case("a", 1, ok), Case("b", 1, ok), Case("c", 1, wrong), Case("d", 1, skipped),
                Case("e", 1000, ok)]
    """
)

# A stand-in for the Python that runs a worker: the real worker, except that the first
# time it is given case 1, that case kills the process (as a fault in a kernel would).
FAKE_PYTHON = textwrap.dedent(
    """\
    #!{python}
    import json, os, pathlib, sys
    sys.path[:0] = {paths!r}
    import gpu_check
    gpu_check.PARTS = gpu_check.PARTS + (gpu_check.Part("fake", "fake", 10, "fake_cases"),)
    args = sys.argv[2:]
    results = pathlib.Path(args[args.index("--results") + 1])
    indices = [int(i) for i in args[args.index("--indices") + 1].split(",")]
    marker = results.parent / "crashed"
    if 1 in indices and not marker.exists():
        marker.touch()
        gpu_check.worker("fake", indices[: indices.index(1)], results, 30.0)
        with results.open("a") as out:
            out.write(json.dumps({{"index": 1, "event": "start"}}) + "\\n")
        print("Segmentation fault", file=sys.stderr, flush=True)
        os._exit(139)
    sys.exit(gpu_check.worker("fake", indices, results, 30.0))
    """
)


def test_a_crashed_worker_is_recorded_and_the_rest_continue(tmp_path, monkeypatch):
    (tmp_path / "fake_cases.py").write_text(FAKE_CASES)
    monkeypatch.syspath_prepend(str(tmp_path))
    python = tmp_path / "python"
    paths = [str(BENCHMARKS), str(tmp_path), str(ROOT)]
    python.write_text(FAKE_PYTHON.format(python=sys.executable, paths=paths))
    python.chmod(0o755)
    part = gpu_check.Part("fake", "fake", 30.0, "fake_cases")
    result = gpu_check.run_case_part(part, 30.0, str(python), dict(os.environ))
    statuses = [(r["name"], r["status"]) for r in result["results"]]
    assert statuses == [("a", "pass"), ("b", "crash"), ("c", "fail"), ("d", "skip"), ("e", "skip")]
    assert "exit code 139" in result["results"][1]["message"]
    assert "Segmentation fault" in result["results"][1]["message"]
    assert result["results"][2]["message"] == "differs"
    assert result["results"][3]["message"] == "no torch"
    assert "would overrun" in result["results"][4]["message"]
    assert result["status"] == "fail"
    assert result["counts"] == {
        "pass": 1,
        "fail": 1,
        "error": 0,
        "skip": 2,
        "timeout": 0,
        "crash": 1,
    }


def test_a_worker_that_cannot_start_fails_every_case_once(tmp_path, monkeypatch):
    (tmp_path / "fake_cases.py").write_text(FAKE_CASES)
    monkeypatch.syspath_prepend(str(tmp_path))
    python = tmp_path / "python"
    python.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('ImportError: boom')\n")
    python.chmod(0o755)
    part = gpu_check.Part("fake", "fake", 30.0, "fake_cases")
    result = gpu_check.run_case_part(part, 30.0, str(python), dict(os.environ))
    assert [r["status"] for r in result["results"]] == ["error"] * 5
    assert "before running any case (exit code 1)" in result["results"][0]["message"]
    assert "ImportError: boom" in result["results"][0]["message"]
    assert result["elapsed_s"] < 20  # not retried until the budget ran out


# --------------------------------------------------------------------------- the cases


def test_every_example_has_a_gpu_case():
    covered = {case.example for case in gpu_examples.example_cases()}
    missing = set(gpu_common.example_stems()) - covered
    assert not missing, f"add GPU cases to benchmarks/gpu_examples.py for {sorted(missing)}"
    names = [case.name for case in gpu_check.PARTS[1].cases()]
    assert not any("no GPU case" in name for name in names)


@pytest.mark.parametrize("case", gpu_examples.example_cases(), ids=lambda case: case.name)
def test_each_example_case_rehearsed_on_the_cpu(case):
    """The CPU backend stands in for the GPU: the inputs, constexprs, output positions,
    tolerances and the example's reference all have to work before any GPU time is spent."""
    result = gpu_examples.check_example(case, gpu_examples.run_cpu)
    # check_example raises past the tolerance; blocks that meet by atomic additions
    # (split-K) may add in another order on the CPU's host threads too
    assert result["summary"] == "bit-exact" or not case.deterministic, result["summary"]
    assert result["vs reference"]["ok"]


def test_a_wrong_device_result_fails_the_case():
    case = next(c for c in gpu_examples.example_cases() if c.example == "row_sum")

    def off_by_one(kernel, args, constexprs, outputs):
        found = gpu_examples.run_cpu(kernel, args, constexprs, outputs)
        found[0][3] += 1
        return found

    with pytest.raises(gpu_common.CheckFailed, match="GPU vs CPU backend: NOT bit-exact"):
        gpu_examples.check_example(case, off_by_one)


def test_the_interpreter_agrees_with_the_cpu_backend_through_the_same_check():
    case = next(c for c in gpu_examples.example_cases() if c.example == "cumsum")
    assert gpu_examples.check_example(case, gpu_examples.run_interpreter)["summary"] == "bit-exact"


def test_the_benchmarks_u4_dequantization_matches_tilelang_packing():
    k, n, group = 256, 48, 128
    data, scales = gpu_quant_matmul.host_weights(k, n, group)
    packed = tl.PackedArray(data, tl.u4, (k, n))
    assert np.array_equal(gpu_quant_matmul.unpack_u4(data).reshape(k, n), packed.codes())
    expected = packed.unpack().astype(np.float16) * np.repeat(scales, group, axis=0)[:k]
    assert np.array_equal(gpu_quant_matmul.dequantize_u4(data, scales, k, n, group), expected)


def test_the_torch_dequantization_equals_the_numpy_one():
    """The benchmark dequantizes on the GPU with torch; the same code on CPU tensors."""
    torch = pytest.importorskip("torch")
    k, n, group = 256, 48, 128
    data, scales = gpu_quant_matmul.host_weights(k, n, group)
    on_torch = gpu_quant_matmul.dequantize_u4(
        torch.from_numpy(data), torch.from_numpy(scales), k, n, group
    )
    on_numpy = gpu_quant_matmul.dequantize_u4(data, scales, k, n, group)
    assert np.array_equal(on_torch.numpy(), on_numpy)


def test_the_example_tiles_come_before_the_other_tiles():
    """Cases run in order and the last ones are skipped when time is short."""
    quant = [c.name for c in gpu_quant_matmul.cases()]
    assert quant.index("quant_matmul u4 m=16 k=8192 n=28672 example tiles") < quant.index(
        "quant_matmul u4 m=1 k=4096 n=4096 BN=32"
    )


def test_the_triton_comparison_runs_right_after_the_library_cases():
    quant = [c.name for c in gpu_quant_matmul.cases()]
    triton = [n for n in quant if "vs Triton W4A16" in n]
    assert triton == [
        "tilelang.quant.matmul vs Triton W4A16 m=1 k=4096 n=4096",
        "tilelang.quant.matmul vs Triton W4A16 m=16 k=4096 n=4096",
    ]
    assert quant[:4] == [
        "quant_matmul u4 m=1 k=4096 n=4096 example tiles",
        "quant_matmul u4 m=1 k=8192 n=28672 example tiles",
        *triton,
    ]  # the part's budget skips the last cases: the issues' targets come first
    assert gpu_quant_matmul.TRITON_TARGET == 2.0  # issue 11: at least 2x at m = 1 and 16


def test_the_triton_format_dequantizes_as_its_spec_says():
    """words [K/8, N] int32, row k at bits 4·(k mod 8) of word k // 8; weight (q − 8)·s
    rounded once to f16, s one f16 per 128 rows — packed here code by code."""
    import torch
    from triton_w4a16 import GROUP, dequantize

    k, n = 256, 3
    rng = np.random.default_rng(7)
    q = rng.integers(0, 16, (k, n))
    s = (rng.random((k // GROUP, n)) / 64).astype(np.float16)
    words = np.zeros((k // 8, n), np.int64)
    for row in range(k):
        words[row // 8] |= q[row] << (4 * (row % 8))
    words = words.astype(np.uint32).view(np.int32)  # two's complement, as torch's int32
    got = dequantize(torch, torch.from_numpy(words), torch.from_numpy(s), k).numpy()
    want = ((q - 8) * s[np.arange(k) // GROUP].astype(np.float64)).astype(np.float16)
    assert got.dtype == np.float16 and np.array_equal(got, want)


def test_the_triton_comparison_is_skipped_by_name_without_triton(monkeypatch):
    import triton_w4a16

    monkeypatch.setattr(triton_w4a16, "make_kernel", lambda: None)  # as without triton
    case = gpu_quant_matmul.triton_case(1, 256, 128)
    with pytest.raises(gpu_common.Skip, match="triton is not installed"):
        case.run(gpu_common.Context())


# --------------------------------------------------------------------------- attention


def test_the_attention_cases_cover_the_issues_targets():
    names = [case.name for case in gpu_attention.cases()]
    assert names == [
        "flash_attention D=128 vs torch flash SDPA",
        "flash_attention D=128 causal vs torch flash SDPA",
        "paged_decode_attention batch=64 context=4096 vs copy bandwidth",
        "selective_scan B=8 Dm=2048 N=16 L=2048 vs bandwidth floor",
        # after the issue's targets: a budget cut skips it first
        "paged_decode_attention batch=64 context=4096 (u8 cache) vs copy bandwidth",
        "selective_scan B=1 Dm=2048 N=16 L=2048 vs bandwidth floor",  # the segmented walk
    ]
    assert gpu_attention.FORWARD["head_dim"] == 128
    assert (gpu_attention.DECODE["batch"], gpu_attention.DECODE["context"]) == (64, 4096)
    assert (gpu_attention.FORWARD_TARGET, gpu_attention.DECODE_TARGET) == (0.90, 0.85)
    assert gpu_attention.SCAN_TARGET == 0.80
    assert "bench-attention" in gpu_check.PART_KEYS


def test_the_causal_forward_counts_the_visible_scores():
    full = gpu_attention.forward_flops(1, 4, 1, 8, causal=False)
    assert full == 4 * 16 * 8
    assert gpu_attention.forward_flops(1, 4, 1, 8, causal=True) == full * 10 / 16


def _on_cpu_backend(torch, fn, *tensors, **kwargs):
    """`fn` (a tilelang.kernels function) on the CPU backend: torch CPU tensors in and out."""
    out = fn(*(t.numpy() for t in tensors), **kwargs)
    return torch.from_numpy(out)


@pytest.mark.parametrize("causal", [False, True])
def test_the_forward_check_rehearsed_on_the_cpu(causal):
    """The GPU case's inputs, reference and check with torch on the CPU (its default SDPA
    backend standing in for flash) and the CPU backend standing in for the GPU."""
    import torch

    from tilelang.kernels import flash_attention

    q, k, v = gpu_attention.forward_inputs(torch, "cpu", 1, 100, 2, 128)
    ours = _on_cpu_backend(torch, flash_attention, q, k, v, causal=causal)
    theirs = gpu_attention.torch_attention(torch, q.float(), k.float(), v.float(), causal)
    check, torch_error = gpu_attention.check_forward(torch, ours, theirs, q, k, v, causal)
    assert check.ok and check.max_abs < 2e-3 and torch_error.max_abs < 1e-5
    wrong = ours.clone()
    wrong[0, 99, 1, 5] += 0.01
    with pytest.raises(gpu_common.CheckFailed, match="tilelang flash_attention"):
        gpu_attention.check_forward(torch, wrong, theirs, q, k, v, causal)


def test_the_decode_check_rehearsed_on_the_cpu():
    import torch

    from tilelang.kernels import paged_decode_attention

    shape = dict(batch=3, context=37, heads=4, kv_heads=1, head_dim=64, block_size=16)
    q, k_cache, v_cache, table, seq_lens = gpu_attention.decode_inputs(torch, "cpu", **shape)
    assert sorted(table.flatten().tolist()) == list(range(k_cache.shape[0]))
    ours = _on_cpu_backend(torch, paged_decode_attention, q, k_cache, v_cache, table, seq_lens)
    check = gpu_attention.check_decode(torch, ours, q, k_cache, v_cache, table, seq_lens)
    assert check.ok
    wrong = ours.clone()
    wrong[1, 3, 7] += 0.01
    with pytest.raises(gpu_common.CheckFailed, match="tilelang paged_decode_attention"):
        gpu_attention.check_decode(torch, wrong, q, k_cache, v_cache, table, seq_lens)


def test_the_quantized_decode_check_rehearsed_on_the_cpu():
    import torch

    from tilelang.kernels import paged_decode_attention

    shape = dict(batch=3, context=37, heads=4, kv_heads=1, head_dim=64, block_size=16)
    q, k_cache, v_cache, table, seq_lens = gpu_attention.decode_inputs(torch, "cpu", **shape)
    kc, ks, kz, k_values = gpu_attention.quantize_per_token(torch, k_cache)
    vc, vs, vz, v_values = gpu_attention.quantize_per_token(torch, v_cache)
    # the codes stand for the cache within half a step, and span 0..255 on each row
    x = k_cache.float()
    assert torch.all((k_values - x).abs() <= ks[..., None] / 2 * 1.001 + 1e-6)
    assert kc.dtype == torch.uint8 and int(kc.min()) == 0 and int(kc.max()) == 255
    scales = {
        name: value.numpy()
        for name, value in dict(k_scale=ks, v_scale=vs, k_zero=kz, v_zero=vz).items()
    }
    ours = _on_cpu_backend(torch, paged_decode_attention, q, kc, vc, table, seq_lens, **scales)
    check = gpu_attention.check_decode(torch, ours, q, k_values, v_values, table, seq_lens)
    assert check.ok
    with pytest.raises(gpu_common.CheckFailed, match="tilelang paged_decode_attention"):
        wrong = ours.clone()
        wrong[0, 2, 9] += 0.01
        gpu_attention.check_decode(torch, wrong, q, k_values, v_values, table, seq_lens)


# --------------------------------------------------------------------------- the scan


def test_the_scan_floor_counts_each_tensor_once():
    # u, delta, z, out [1, 2, 5] f16: 4 x 20 B; B, C [1, 3, 5] f16: 2 x 30 B; A [2, 3],
    # D [2], delta_bias [2] f32: 40 B.
    assert gpu_attention.scan_bytes(1, 2, 3, 5, itemsize=2) == 80 + 60 + 40
    assert gpu_attention.scan_bytes(1, 2, 3, 5, itemsize=2, groups=2) == 80 + 120 + 40
    assert gpu_attention.scan_bytes(1, 2, 3, 5, itemsize=4) == 160 + 120 + 40
    # The benchmark's shape: four 8x2048x2048 f16 sequences (256 MiB), B and C
    # 8x16x2048 f16 (1 MiB), A 2048x16 and D, delta_bias 2048 f32 (144 KiB).
    nbytes = gpu_attention.scan_bytes(**gpu_attention.SCAN, itemsize=2)
    assert nbytes == 256 * 2**20 + 2**20 + 144 * 2**10


def test_the_scan_floor_is_its_bytes_at_the_measured_copy_bandwidth():
    # A copy that moved 2 GB (1 GB read, 1 GB written) in 1 ms: 2 TB/s; 3 GB take 1.5 ms.
    bandwidth = gpu_attention.copy_bandwidth(2e9, 1e-3)
    assert bandwidth == pytest.approx(2e12)
    assert gpu_common.floor_seconds(3e9, bandwidth) == pytest.approx(1.5e-3)
    with pytest.raises(ValueError, match="seconds: expected a positive copy time, got 0"):
        gpu_attention.copy_bandwidth(2e9, 0)


def test_the_scan_reference_is_the_recurrence_by_hand():
    # One channel, one state, two steps, delta + bias = 0: Δ = ln 2 every step.
    # h0 = ln2·B0·u0, h1 = exp(ln2·A)·h0 + ln2·B1·u1, y = (C·h + D·u)·silu(z).
    u, B, C, z = [1.0, 2.0], [3.0, -1.0], [0.5, 2.0], [2.0, -1.0]
    A, D, ln2 = -1.0, 0.25, np.log(2.0)
    h0 = ln2 * 3.0
    h1 = 0.5 * h0 + ln2 * -2.0  # exp(ln2 · -1) = 1/2
    silu = [2.0 / (1.0 + np.exp(-2.0)), -1.0 / (1.0 + np.exp(1.0))]
    expected = [(0.5 * h0 + D * 1.0) * silu[0], (2.0 * h1 + D * 2.0) * silu[1]]
    got = gpu_attention.scan_reference(
        u=np.array(u).reshape(1, 1, 2),
        delta=np.array([0.5, 0.5]).reshape(1, 1, 2),
        A=np.array([[A]]),
        B=np.array(B).reshape(1, 1, 2),
        C=np.array(C).reshape(1, 1, 2),
        D=np.array([D]),
        z=np.array(z).reshape(1, 1, 2),
        delta_bias=np.array([-0.5]),
    )
    np.testing.assert_allclose(got.ravel(), expected, rtol=1e-12)


def test_the_scan_check_rehearsed_on_the_cpu():
    """The GPU case's inputs, reference and check with torch on the CPU and the CPU
    backend standing in for the GPU, at a length that is not a multiple of the chunk."""
    import torch

    from tilelang.kernels import selective_scan

    inputs = gpu_attention.scan_inputs(torch, "cpu", batch=2, channels=8, state=16, length=100)
    assert inputs["u"].dtype == torch.float16 and inputs["A"].dtype == torch.float32
    steps = torch.nn.functional.softplus(inputs["delta_bias"])
    assert steps.min() >= 1e-3 * 0.999 and steps.max() <= 0.1 * 1.001
    host = {name: value.numpy() for name, value in inputs.items()}
    ours = torch.from_numpy(selective_scan(**host, delta_softplus=True))
    check = gpu_attention.check_scan(torch, ours, inputs)
    assert check.ok and check.max_rel < gpu_attention.SCAN_TOLERANCE
    wrong = ours.clone()
    wrong[1, 5, 99] += 0.05 * float(ours.abs().max())
    with pytest.raises(gpu_common.CheckFailed, match="tilelang selective_scan"):
        gpu_attention.check_scan(torch, wrong, inputs)


def test_the_scan_check_covers_both_ends_of_the_grid():
    assert gpu_attention.scan_checked_channels(2048) == [0, 1, 2, 3, 5, 1025, 2047]
    assert gpu_attention.scan_checked_channels(4) == [0, 1, 2, 3]


def test_without_mamba_ssm_the_scan_says_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # import raises ModuleNotFoundError
    assert gpu_attention.mamba_scan() == (None, "mamba_ssm: not installed")


@pytest.mark.parametrize("block_d", [4, 2, 8])
def test_the_scan_at_the_benchmark_shape_compiles_for_sm90_without_spills(block_d):
    """Every BD a device call tunes among (`scan_configs`), with the size facts a call
    at the benchmark's shape compiles for (`size_facts`: what a launch derives)."""
    import warnings

    from tilelang import dtypes
    from tilelang.kernels import ssm
    from tilelang.passes import plan_registers
    from tilelang.runtime.launch_facts import size_facts

    shape = gpu_attention.SCAN
    nb, dm, n, length = shape["batch"], shape["channels"], shape["state"], shape["length"]
    assert {"BD": block_d} in ssm.scan_configs(n, dm, dm)
    # The call's tensors: u, delta, z, out [NB, DM, L]; B, C [NB, G, N, L]; A [DM, N];
    # D, delta_bias [DM]; the unused last state a [1, 1, 1] placeholder.
    sizes = dict(NB=nb, DM=dm, L=length, N=n, G=1, ND=dm, NZ=nb, DZ=dm, LZ=length)
    sizes |= dict(NBIAS=dm, NL=1, DL=1, SL=1)
    full = dict(T=dtypes.f16, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
    constexprs = dict(full, LAST=False, BD=block_d, BN=n, BL=ssm.CHUNK)
    spec = ssm.selective_scan_kernel.specialization(**constexprs)
    assert {size.name for size in spec.function.sizes} == set(sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", plan_registers.RegisterSpillWarning)
        build = ssm.selective_scan_kernel.compile(
            assume=size_facts(sizes), target="sm_90", **constexprs
        )
        resources = build.resources
    assert 0 < resources.registers <= 255
    assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0


@pytest.mark.gpu
def test_time_gpu_times_a_torch_kernel():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = torch.ones(1 << 24, device="cuda")
    timing = gpu_common.time_gpu(lambda: x.mul_(1.0), repeats=5)
    assert timing.samples == 5 and 0 < timing.min_s <= timing.median_s < 1.0


@pytest.mark.parametrize("device, expected", [("sm_90a", "sm_90"), ("sm_80", None)])
def test_an_h100_also_times_the_mma_sync_build(monkeypatch, device, expected):
    """On sm_90a the forward case times the same call once more with the kernels built
    for sm_90 (mma.sync); elsewhere there is no second build."""
    from tilelang.runtime import gpu

    monkeypatch.setattr(gpu, "device_arch", lambda: device)
    assert gpu_common.mma_sync_build(lambda: gpu.device_arch()) == expected
    assert gpu.device_arch() == device  # restored after the timing


def test_the_gemm_against_cublas_runs_right_after_the_triton_cases():
    """Issue 11's m = 4096 target: the library's gemm path against torch's f16 matmul
    (cuBLAS) of the dequantized weights, before the part's budget can skip it."""
    quant = [c.name for c in gpu_quant_matmul.cases()]
    assert quant[4] == "tilelang.quant.matmul u4 g128 m=4096 k=4096 n=4096"
    assert gpu_quant_matmul.CUBLAS_TARGET == 0.9 and gpu_quant_matmul.GEMM_M > 64


def test_a_failing_check_keeps_the_number_of_what_passed_before_it():
    kept = r"wrong \(the sm_90 build passed its check: 12\.5 us\)"
    with (
        pytest.raises(gpu_common.CheckFailed, match=kept),
        gpu_common.kept_if_failing(12.5e-6, "the sm_90 build"),
    ):
        raise gpu_common.CheckFailed("wrong")
    with (
        pytest.raises(gpu_common.CheckFailed, match=r"^wrong$"),
        gpu_common.kept_if_failing(None, "the sm_90 build"),  # it did not run
    ):
        raise gpu_common.CheckFailed("wrong")


def test_the_bare_launch_passes_the_kernels_abi(monkeypatch):
    """The launch benchmark's floor: the same cubin launched by cuda-python alone. Through
    its pointer array the driver reads x, y and out's addresses and N, in the kernel's
    parameter order and widths, on torch's current stream, over the kernel's grid."""
    import ctypes
    from types import SimpleNamespace

    from cuda.bindings import driver as cu

    from tilelang.codegen.cuda import kernel_params

    ok = cu.CUresult.CUDA_SUCCESS
    seen = []

    def launch(function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        array = (ctypes.c_void_p * len(names)).from_address(params)
        values = [
            int.from_bytes(ctypes.string_at(array[i], size), "little", signed=True)
            for i, size in enumerate(sizes)
        ]
        seen.append((function, (gx, gy, gz), (bx, by, bz), shared, stream, values, extra))
        return (ok,)

    monkeypatch.setattr(cu, "cuModuleLoadData", lambda cubin: (ok, "module"))
    monkeypatch.setattr(cu, "cuModuleGetFunction", lambda module, name: (ok, name))
    monkeypatch.setattr(cu, "cuLaunchKernel", launch)
    torch = SimpleNamespace(
        cuda=SimpleNamespace(current_stream=lambda: SimpleNamespace(cuda_stream=9))
    )
    build = gpu_examples.load_example("vector_add").vector_add.compile(target="sm_80").cuda
    params = kernel_params(build.thread)
    names, sizes = [p.name for p in params], [p.size for p in params]
    pointers = {"x": 0x7F0000000000, "y": 0x7F0000010000, "out": 0x7F0000020000}
    gpu_launch.bare_launch(torch, build, pointers, 5000)()
    expected = [pointers[p.name] if p.is_tensor else 5000 for p in params]
    threads = build.thread.threads
    assert names == ["x", "y", "out", "N"]
    assert seen == [(build.symbol.encode(), (5, 1, 1), (threads, 1, 1), 0, 9, expected, 0)]


class CpuTorch:
    """torch as the launch benchmark uses it, rehearsed on the CPU: tensors made on the
    host (`device=` dropped), torch.cuda's stream, sleep and synchronize stubbed."""

    def __init__(self):
        from types import SimpleNamespace

        import torch

        self._torch = torch
        stream = SimpleNamespace(cuda_stream=0)
        self.cuda = SimpleNamespace(
            _sleep=lambda cycles: None, synchronize=lambda: None, current_stream=lambda: stream
        )

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def Generator(self, device=None):
        return self._torch.Generator()

    def randn(self, *shape, device=None, generator=None):
        return self._torch.randn(*shape, generator=generator)


def test_the_launch_benchmark_rehearsed_on_the_cpu(monkeypatch):
    """`benchmarks/gpu_launch.py` end to end with the CPU standing in: the kernel call and
    the torch op run on the CPU backend, and the bare launch's `cuLaunchKernel` adds the
    vectors it is handed through its parameter array (host pointers here), so the
    benchmark's own check holds only if it passed x, y, out and N right. Its library
    case runs whole too, at a small hidden size, on CPU torch tensors."""
    import ctypes

    import gpu_launch
    from cuda.bindings import driver as cu

    from tilelang.runtime import gpu

    ok = cu.CUresult.CUDA_SUCCESS

    def launch(function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        array = (ctypes.c_void_p * 4).from_address(params)
        x, y, out = (ctypes.c_uint64.from_address(array[i]).value for i in range(3))
        n = ctypes.c_int32.from_address(array[3]).value
        view = lambda address: np.ctypeslib.as_array((ctypes.c_float * n).from_address(address))  # noqa: E731
        view(out)[:] = view(x) + view(y)
        return (ok,)

    monkeypatch.setattr(cu, "cuModuleLoadData", lambda cubin: (ok, "module"))
    monkeypatch.setattr(cu, "cuModuleGetFunction", lambda module, name: (ok, name))
    monkeypatch.setattr(cu, "cuLaunchKernel", launch)
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_80")
    monkeypatch.setattr(gpu_launch, "_sleep_cycles_per_second", lambda torch: 1e9)
    monkeypatch.setattr(gpu_launch, "ROUNDS", 3)
    monkeypatch.setattr(gpu_launch, "CALLS", 5)
    monkeypatch.setattr(gpu_launch, "HIDDEN", 256)  # the library case, small
    context = gpu_common.Context()
    context.__dict__["torch"] = CpuTorch()  # the cached property, filled
    case, library = gpu_launch.cases()
    record = case.run(context)
    assert record["kind"] == "benchmark" and "host time per launch" in record["shape"]
    assert record["floor"]["label"] == "bare cuLaunchKernel (cuda-python)"
    assert record["ours"]["time_s"] > 0 and record["baseline"]["label"].startswith("torch.add")
    assert "over the bare launch" in record["notes"] and "tilelang.torch op" in record["notes"]
    table = gpu_check.benchmark_tables(
        [{"key": "bench-launch", "title": "launch", "results": [{"data": record}]}]
    )
    assert any("bare cuLaunchKernel" in line for line in table)
    # The library case: rms_norm and quant.matmul on CPU torch tensors (the CPU backend,
    # through `runtime.host_calls`), checked against float32 torch after the loops.
    record = library.run(context)
    assert record["ours"]["label"].startswith("tilelang.kernels.rms_norm")
    assert "quant.matmul u4 m=1 k=n=256: planned" in record["notes"]
    assert record["floor"]["label"] == "bare cuLaunchKernel (cuda-python)"


def test_the_library_calls_check_holds_for_right_results_only():
    """The launch benchmark's library case checks rms_norm and quant.matmul after its
    loops against float32 torch formulas: results of the same calls on the CPU backend
    pass, and a result off by a few units in the last place of the largest output
    fails."""
    import torch
    from gpu_launch import _check_library_results

    import tilelang.kernels as K
    from tilelang import quant

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 512)).astype(np.float16)
    w = rng.standard_normal(512).astype(np.float16)
    qw = quant.quantize(rng.standard_normal((512, 256)).astype(np.float32), "u4", group_size=128)
    y_norm, y_matmul = K.rms_norm(x, w), quant.matmul(x, qw)
    exact = torch.from_numpy(qw.dequantize().astype(np.float32))
    tensors = [torch.from_numpy(a) for a in (x, w, y_norm)]
    _check_library_results(torch, *tensors, exact, torch.from_numpy(y_matmul))
    wrong = y_matmul.copy()
    wrong[0, 7] += np.float16(0.01 * np.abs(y_matmul).max())
    with pytest.raises(gpu_common.CheckFailed, match=r"quant\.matmul"):
        _check_library_results(torch, *tensors, exact, torch.from_numpy(wrong))
    wrong = y_norm.copy()
    wrong[0, 3] = -wrong[0, 3]
    with pytest.raises(gpu_common.CheckFailed, match="rms_norm"):
        _check_library_results(
            torch, *tensors[:2], torch.from_numpy(wrong), exact, torch.from_numpy(y_matmul)
        )
