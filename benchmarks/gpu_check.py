"""The GPU self-check: everything GPU-only, in one command, in a few minutes.

    make gpu-check OUT=$OUT                 # on a machine with a GPU (docs/gpu.md)
    python3 benchmarks/gpu_check.py [--out DIR] [--parts examples,bench-matmul]
                                    [--budget-scale 0.5] [--dry-run]

Runs, each part within a time budget (whatever would overrun is skipped and reported):

* pytest -m gpu: the test suite's GPU tests;
* examples: every example kernel on the GPU against the CPU backend on the same inputs
  (benchmarks/gpu_examples.py);
* the GPU benchmarks (benchmarks/gpu_memory.py, gpu_launch.py, gpu_quant_matmul.py,
  gpu_matmul.py, gpu_attention.py),
  each number beside a baseline measured in the same run and the physical floor.

Writes gpu-report.md and gpu-report.json into --out, else $OUT, else the repository
root: the card, driver, CUDA/NVRTC/torch/triton versions, the tilelang commit, each
part's counts, the failures' messages and every benchmark number. The reports are
rewritten after each part, so a run cut short still leaves what it measured.

Without a GPU (or with --dry-run) it says so, lists what it would run with each time
budget, writes the reports with that status and exits 0. With a GPU it exits 1 when
anything failed.

This file imports only the standard library: each part runs in its own Python process
(a kernel that faults poisons its CUDA context; the remaining cases then continue in a
fresh process), with the repository first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import ROOT, Case, CheckFailed, Context, Skip, example_stems

REPORT_MD = "gpu-report.md"
REPORT_JSON = "gpu-report.json"
#: The device tool (docs/gpu.md): a command runs at most DEVICE_COMMAND_S, a session has
#: DEVICE_SESSION_S of device time in all, the machine's start ("a minute or more";
#: MACHINE_START_S assumed) included.
DEVICE_COMMAND_S = 600.0
DEVICE_SESSION_S = 900.0
MACHINE_START_S = 120.0
#: The device call's timeout_s for `make gpu-check`: the check's cap and what make does
#: around it (gpu-deps, starting Python, the reports). Two calls and a start fit one
#: session, so a check cut short or failed can be rerun at once on the warm machine.
RUN_TIMEOUT_S = 360.0
TOTAL_BUDGET_S = 330.0  # everything, machine probe included: 5 min 30 s
#: The probe's share of the cap (it takes a few seconds; at worst PROBE_TIMEOUT_S, and
#: then the last part is cut short). The parts' budgets add up to the rest.
PROBE_RESERVE_S = 20.0
PROBE_TIMEOUT_S = 60.0
COLLECT_TIMEOUT_S = 90.0
WORKER_GRACE_S = 5.0
MAX_RESTARTS = 3
MIN_PART_S = 5.0  # a part with less time left than this is skipped whole
CONTEXT_LOST = 3  # a worker's exit code when the CUDA context is unusable after a case


@dataclass(frozen=True)
class Part:
    key: str
    title: str
    budget_s: float
    module: str | None  # the module whose cases() it runs; None for pytest

    def cases(self) -> list[Case]:
        if self.module is None:
            return []
        return importlib.import_module(self.module).cases()


PARTS = (
    Part("pytest", "pytest -m gpu (the test suite's GPU tests)", 52.0, None),
    Part("examples", "every example on the GPU vs the CPU backend", 75.0, "gpu_examples"),
    Part("bench-memory", "benchmark: vector_add GB/s vs torch vs DRAM floor", 30.0, "gpu_memory"),
    Part(
        "bench-launch",
        "benchmark: host time per launch vs torch.add vs a bare cuLaunchKernel; library calls",
        18.0,
        "gpu_launch",
    ),
    Part(
        "bench-quant-matmul",
        "benchmark: quantized matmul at decode shapes vs torch f16 vs floor",
        60.0,
        "gpu_quant_matmul",
    ),
    Part("bench-matmul", "benchmark: dense matmul vs torch vs floor", 25.0, "gpu_matmul"),
    Part(
        "bench-attention",
        "benchmark: flash attention vs torch flash SDPA, paged decode vs copy bandwidth, "
        "selective_scan vs bandwidth floor",
        50.0,
        "gpu_attention",
    ),
)
PART_KEYS = tuple(p.key for p in PARTS)

# --------------------------------------------------------------------------- environment

DISTRIBUTIONS = (
    "torch",
    "triton",
    "numpy",
    "llvmlite",
    "sympy",
    "lark",
    "cuda-bindings",
    "cuda-python",
    "cuda-pathfinder",
    "nvidia-cuda-nvrtc",
    "nvidia-cuda-nvrtc-cu12",
    "ml_dtypes",
    "pytest",
    "hypothesis",
)
REQUIRED_MODULES = ("numpy", "llvmlite", "sympy", "lark", "cuda.bindings", "pytest", "hypothesis")


def nvidia_smi() -> dict[str, Any]:
    """What nvidia-smi (or /proc/driver/nvidia) says; empty when there is no driver."""
    found: dict[str, Any] = {}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            rows = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and rows:
                name, driver, memory = ([*rows[0].split(", "), "", ""])[:3]
                found.update(gpus=rows, name=name, driver=driver, memory=memory)
            else:
                found["error"] = (out.stderr or out.stdout).strip()[-300:]
        except (OSError, subprocess.SubprocessError) as error:
            found["error"] = str(error)
    version = Path("/proc/driver/nvidia/version")
    if version.exists():
        with contextlib.suppress(OSError, IndexError):
            found["proc_version"] = version.read_text().splitlines()[0].strip()
    return found


def probe_environment() -> dict[str, Any]:
    """Everything the report says about the machine, found in this process."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "hostname": platform.node(),
    }
    packages = {}
    for name in DISTRIBUTIONS:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    info["packages"] = packages
    problems = []
    for module in REQUIRED_MODULES:
        try:
            importlib.import_module(module)
        except Exception as error:
            problems.append(f"{module}: {type(error).__name__}: {error}")
    info["import_problems"] = problems
    try:
        import tilelang
        from tilelang.runtime.cache import source_hash

        info["tilelang"] = {
            "version": tilelang.__version__,
            "path": str(Path(tilelang.__file__).resolve().parent),
            "source_hash": source_hash()[:16],
        }
    except Exception as error:
        info["tilelang_error"] = f"{type(error).__name__}: {error}"
    try:
        from tilelang.runtime.nvrtc import nvrtc_version

        info["nvrtc"] = "{}.{}".format(*nvrtc_version())
    except Exception as error:
        info["nvrtc_error"] = f"{type(error).__name__}: {error}"
    try:
        from tilelang.runtime import gpu

        cu = gpu.driver()
        _, version = cu.cuDriverGetVersion()
        info["cuda_driver_api"] = f"{int(version) // 1000}.{int(version) % 1000 // 10}"
        info["tilelang_gpu"] = True
        info["arch"] = gpu.device_arch()
    except Exception as error:
        info["tilelang_gpu"] = False
        info["tilelang_gpu_reason"] = f"{type(error).__name__}: {error}"
    try:
        import torch

        info["torch_cuda_version"] = torch.version.cuda
        info["torch_cuda"] = bool(torch.cuda.is_available())
        if info["torch_cuda"]:
            properties = torch.cuda.get_device_properties(0)
            info["device_name"] = torch.cuda.get_device_name(0)
            info["device_count"] = torch.cuda.device_count()
            info["capability"] = "{}.{}".format(*torch.cuda.get_device_capability(0))
            info["memory_gib"] = round(properties.total_memory / 2**30, 1)
            info["multiprocessors"] = properties.multi_processor_count
    except Exception as error:
        info["torch_cuda"] = False
        info["torch_error"] = f"{type(error).__name__}: {error}"
    info["nvidia_smi"] = nvidia_smi()
    if "device_name" not in info and info["nvidia_smi"].get("name"):
        info["device_name"] = info["nvidia_smi"]["name"]
    return info


def git_info() -> dict[str, Any]:
    """The commit of the checkout: git when there is a .git, else $TILELANG_COMMIT."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if commit.returncode == 0:
            status = subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--", "tilelang", "examples"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            return {
                "commit": commit.stdout.strip(),
                "dirty": bool(status.stdout.strip()),
                "source": "git",
            }
    except (OSError, subprocess.SubprocessError):
        pass
    given = os.environ.get("TILELANG_COMMIT")
    if given:
        return {"commit": given, "dirty": None, "source": "$TILELANG_COMMIT"}
    return {"commit": "unknown (no .git here; pass TILELANG_COMMIT=<sha>)", "dirty": None}


def has_gpu(environment: dict[str, Any]) -> tuple[bool, str]:
    """Whether there is a GPU to check, and what says so (or why not)."""
    if environment.get("torch_cuda") or environment.get("tilelang_gpu"):
        return True, environment.get("device_name", "a CUDA device")
    reasons = []
    if "probe_error" in environment:
        reasons.append(f"the environment probe failed: {environment['probe_error']}")
    if environment.get("torch_error"):
        reasons.append(f"torch: {environment['torch_error']}")
    elif "torch_cuda" in environment:
        reasons.append("torch: no CUDA device")
    if environment.get("tilelang_gpu_reason"):
        reasons.append(f"tilelang: {environment['tilelang_gpu_reason']}")
    smi = environment.get("nvidia_smi", {})
    if smi.get("name"):
        # A driver and a card, but neither torch nor tilelang can use them: a broken
        # setup, not a machine without a GPU.
        return True, f"{smi['name']} (nvidia-smi), unusable from Python: " + "; ".join(reasons)
    reasons.append("nvidia-smi: " + (smi.get("error") or "not found"))
    return False, "; ".join(reasons)


def run_probe(python: str, env: dict[str, str]) -> dict[str, Any]:
    try:
        out = subprocess.run(
            [python, str(Path(__file__).resolve()), "--env-probe"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {
            "probe_error": f"timed out after {PROBE_TIMEOUT_S:.0f} s",
            "nvidia_smi": nvidia_smi(),
        }
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {
        "probe_error": f"exit code {out.returncode}: {(out.stderr or out.stdout).strip()[-600:]}",
        "nvidia_smi": nvidia_smi(),
    }


# --------------------------------------------------------------------------- pytest


def gpu_tests_by_ast(tests: Path = ROOT / "tests") -> list[str]:
    """The test functions marked `gpu` in tests/*.py, found without importing them."""
    found = []
    for path in sorted(tests.glob("test_*.py")):
        try:
            tree = ast.parse(path.read_text(), str(path))
        except (OSError, SyntaxError):
            continue
        module_marked = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and "gpu" in ast.unparse(node.value)
            for node in tree.body
        )
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
                "test"
            ):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if module_marked or any(re.search(r"\bmark\.gpu\b", d) for d in decorators):
                    suffix = "[...]" if any("parametrize" in d for d in decorators) else ""
                    found.append(f"tests/{path.name}::{node.name}{suffix}")
    return found


def gpu_test_files(tests: Path = ROOT / "tests") -> list[str]:
    """The test files that mark anything `gpu`: pytest collects only these, so a module
    without GPU tests that cannot be imported on the GPU machine (an optional package it
    lacks) cannot fail the GPU run. All of tests/ when none is found."""
    found = [
        str(path.relative_to(ROOT))
        for path in sorted(tests.glob("test_*.py"))
        if "mark.gpu" in path.read_text(errors="replace")
    ]
    return found or [str(tests.relative_to(ROOT))]


def collect_gpu_tests(python: str, env: dict[str, str]) -> tuple[list[str], str]:
    """(test ids, how they were found): pytest --collect-only, else reading the files."""
    try:
        out = subprocess.run(
            [python, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider"]
            + gpu_test_files(),
            capture_output=True,
            text=True,
            timeout=COLLECT_TIMEOUT_S,
            env=env,
            cwd=ROOT,
        )
        ids = [line.strip() for line in out.stdout.splitlines() if "::" in line]
        if out.returncode == 0 and ids:
            return ids, "pytest --collect-only -m gpu"
        why = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["no output"]
        reason = f"pytest could not collect here ({why[0][:200]})"
    except (OSError, subprocess.SubprocessError) as error:
        reason = f"pytest could not run here ({error})"
    return gpu_tests_by_ast(), f"read from tests/*.py: {reason}"


_VERBOSE_LINE = re.compile(r"^(\S+::\S+?)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def parse_pytest_verbose(text: str) -> list[dict[str, Any]]:
    """Outcomes from `pytest -v` output (used when pytest was stopped before its junit
    report was written)."""
    outcome = {"PASSED": "pass", "XFAIL": "pass", "FAILED": "fail", "XPASS": "fail"}
    outcome |= {"ERROR": "error", "SKIPPED": "skip"}
    results = []
    for line in text.splitlines():
        match = _VERBOSE_LINE.match(line.strip())
        if match:
            results.append({"name": match[1], "status": outcome[match[2]], "message": ""})
    return results


def parse_junit(path: Path) -> list[dict[str, Any]]:
    """Outcomes and messages of every test case in a pytest junit XML report."""
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        file = case.get("file")
        name = case.get("name", "?")
        classname = case.get("classname", "")
        if file:
            test_id = f"{file}::{name}"
        elif classname:
            test_id = classname.replace(".", "/") + f".py::{name}"
        else:  # a module that could not be collected
            test_id = f"(collecting) {name}"
        status, message = "pass", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "fail", "error": "error", "skipped": "skip"}[child.tag]
                message = (child.get("message") or "").strip()
                if status != "skip" and child.text:
                    message = (message + "\n" + child.text.strip()[-2000:]).strip()
                break
        results.append(
            {"name": test_id, "status": status, "message": message, "elapsed_s": _seconds(case)}
        )
    return results


def _seconds(case: ET.Element) -> float:
    try:
        return float(case.get("time", "0"))
    except ValueError:
        return 0.0


def run_pytest_part(part: Part, budget: float, python: str, env: dict[str, str]) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-pytest-"))
    junit, log = scratch / "junit.xml", scratch / "pytest.log"
    command = [python, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider"]
    command += ["--continue-on-collection-errors", f"--junitxml={junit}"]
    command += ["-o", "junit_family=xunit1", *gpu_test_files()]
    start = time.monotonic()
    timed_out = False
    with log.open("w") as output:
        try:
            completed = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=budget, env=env, cwd=ROOT
            )
            returncode = completed.returncode
        except subprocess.TimeoutExpired:
            timed_out, returncode = True, None
    text = log.read_text(errors="replace")
    tail = "\n".join(text.splitlines()[-25:])
    print(tail, flush=True)
    finished = junit.exists() and not timed_out
    results = parse_junit(junit) if finished else parse_pytest_verbose(text)
    problems = []
    if timed_out:
        problems.append(
            f"pytest was stopped at its {budget:.0f} s budget; the tests after the last "
            "one listed did not run"
        )
        results.append({"name": "(pytest, stopped)", "status": "timeout", "message": tail})
    elif returncode == 5 or not results:
        problems.append("no test marked gpu was collected")
        results.append({"name": "(pytest)", "status": "error", "message": tail})
    elif returncode not in (0, 1):
        problems.append(f"pytest exited with {returncode}")
        results.append({"name": "(pytest)", "status": "error", "message": tail})
    counts = count(results)
    if counts["pass"] == 0 and counts["skip"] and not problems:
        problems.append("every GPU test was skipped on a machine with a GPU")
        results.append(
            {"name": "(pytest)", "status": "fail", "message": "all GPU tests skipped: " + tail}
        )
    return finish_part(part, budget, start, results, problems, command=" ".join(command))


# --------------------------------------------------------------------------- case parts


def count(results: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(("pass", "fail", "error", "skip", "timeout", "crash"), 0)
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return counts


def finish_part(part, budget, start, results, problems=(), **extra) -> dict[str, Any]:
    counts = count(results)
    bad = counts["fail"] + counts["error"] + counts["timeout"] + counts["crash"]
    return {
        "key": part.key,
        "title": part.title,
        "status": "fail" if bad or problems else "pass",
        "budget_s": round(budget, 1),
        "elapsed_s": round(time.monotonic() - start, 1),
        "counts": counts,
        "problems": list(problems),
        "results": results,
        **extra,
    }


def skipped_part(part: Part, budget: float, total_budget: float) -> dict[str, Any]:
    """A part that the run's overall cap left no time for."""
    names = [c.name for c in part.cases()] or [part.title]
    why = f"not run: the whole check's {total_budget:.0f} s cap was spent"
    results = [{"name": name, "status": "skip", "message": why} for name in names]
    return finish_part(part, budget, time.monotonic(), results)


def run_case_part(part: Part, budget: float, python: str, env: dict[str, str]) -> dict[str, Any]:
    """Runs the part's cases in worker processes: a case that kills its worker or the
    CUDA context is recorded and the rest continue in a fresh one, while time is left."""
    cases = part.cases()
    start = time.monotonic()
    deadline = start + budget
    results: dict[int, dict[str, Any]] = {}
    pending = list(range(len(cases)))
    scratch = Path(tempfile.mkdtemp(prefix=f"gpu-check-{part.key}-"))
    restarts = 0
    while pending and restarts <= MAX_RESTARTS:
        left = deadline - time.monotonic()
        if left <= 1:
            break
        results_file = scratch / f"results-{restarts}.jsonl"
        errors_file = scratch / f"stderr-{restarts}.txt"
        command = [python, str(Path(__file__).resolve()), "--worker", part.key]
        command += ["--indices", ",".join(map(str, pending)), "--results", str(results_file)]
        command += ["--seconds", f"{left:.1f}"]
        timed_out, returncode = False, None
        with errors_file.open("w") as errors:
            try:
                returncode = subprocess.run(
                    command, stderr=errors, timeout=left + WORKER_GRACE_S, env=env, cwd=ROOT
                ).returncode
            except subprocess.TimeoutExpired:
                timed_out = True
        started = None
        if results_file.exists():
            for line in results_file.read_text().splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("event") == "start":
                    started = event["index"]
                else:
                    results[event["index"]] = event
                    started = None if started == event["index"] else started
        stderr_tail = "\n".join(errors_file.read_text(errors="replace").splitlines()[-30:])
        if returncode not in (0, None) and stderr_tail:
            print(f"[{part.key}] worker exited with {returncode}; its stderr ends:", flush=True)
            print(stderr_tail, flush=True)
        if started is not None and started not in results:
            status = "timeout" if timed_out else "crash"
            why = (
                f"stopped at the part's {budget:.0f} s budget"
                if timed_out
                else f"the worker died (exit code {returncode})"
            )
            results[started] = {
                "index": started,
                "name": cases[started].name,
                "status": status,
                "message": f"{why} while running this case\n{stderr_tail}".strip(),
                "elapsed_s": None,
            }
        progressed = any(i in results for i in pending)
        pending = [i for i in pending if i not in results]
        if not progressed and not timed_out and returncode != 0:
            for i in pending:  # it died before any case ran: running it again would too
                results[i] = {
                    "index": i,
                    "name": cases[i].name,
                    "status": "error",
                    "message": f"the worker failed before running any case (exit code "
                    f"{returncode})\n{stderr_tail}".strip(),
                    "elapsed_s": None,
                }
            pending = []
        if timed_out or returncode == 0:
            break
        restarts += 1
    for i in pending:
        results[i] = {
            "index": i,
            "name": cases[i].name,
            "status": "skip",
            "message": f"not reached: the part's {budget:.0f} s time budget ran out",
            "elapsed_s": None,
        }
    ordered = [results[i] for i in range(len(cases))]
    return finish_part(part, budget, start, ordered)


def device_healthy() -> bool:
    """Whether the CUDA context still works after a failed case (True when this process
    has none to lose)."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            return float(torch.ones(1, device="cuda").add_(1).item()) == 2.0
    except ImportError:
        pass
    except Exception:
        return False
    try:
        from tilelang.runtime import gpu

        if not gpu.gpu_available():
            return True
        gpu.check("cuCtxSynchronize", gpu.driver().cuCtxSynchronize())
        return True
    except ImportError:
        return True
    except Exception:
        return False


def worker(part_key: str, indices: list[int], results_path: Path, seconds: float) -> int:
    """Runs cases of one part in this process, one JSON line per event in `results_path`."""
    part = next(p for p in PARTS if p.key == part_key)
    cases = part.cases()
    deadline = time.monotonic() + seconds
    context = Context(deadline)
    with results_path.open("a") as out:

        def emit(event: dict[str, Any]) -> None:
            out.write(json.dumps(event, default=str) + "\n")
            out.flush()

        for index in indices:
            case = cases[index]
            record = {"index": index, "name": case.name, "elapsed_s": 0.0, "data": {}}
            if case.budget_s > context.time_left():
                emit(
                    record
                    | {
                        "status": "skip",
                        "message": f"would overrun the part's time budget (needs about "
                        f"{case.budget_s:.0f} s, {max(context.time_left(), 0):.0f} s left)",
                    }
                )
                print(f"  skip  {case.name} (time budget)", flush=True)
                continue
            emit({"index": index, "event": "start"})
            start = time.monotonic()
            try:
                record["data"] = case.run(context)
                record |= {"status": "pass", "message": ""}
            except Skip as reason:
                record |= {"status": "skip", "message": str(reason)}
            except CheckFailed as failure:
                record |= {"status": "fail", "message": str(failure)}
            except Exception as error:
                trace = traceback.format_exc(limit=-6)
                record |= {
                    "status": "error",
                    "message": f"{type(error).__name__}: {error}\n{trace}",
                }
            record["elapsed_s"] = round(time.monotonic() - start, 2)
            healthy = record["status"] not in ("fail", "error") or device_healthy()
            if not healthy:
                record["message"] += (
                    "\n(the CUDA context was unusable afterwards: the remaining cases ran in "
                    "a new process)"
                )
            emit(record)
            print(f"  {record['status']:5} {case.name} ({record['elapsed_s']:.1f} s)", flush=True)
            if record["status"] in ("fail", "error"):
                print("        " + record["message"].splitlines()[0][:300], flush=True)
            if not healthy:
                print("  the CUDA context is unusable: continuing in a new process", flush=True)
                return CONTEXT_LOST
    return 0


# --------------------------------------------------------------------------- the plan


def plan(parts: list[Part], budgets: dict[str, float], tests: list[str], how: str) -> list[dict]:
    """What a GPU run would do: each part with its budget and its items."""
    out = []
    for part in parts:
        if part.module is None:
            items = [{"name": t, "budget_s": None, "about": ""} for t in tests]
            note = f"tests found by {how}"
        else:
            items = [
                {"name": c.name, "budget_s": c.budget_s, "about": c.about} for c in part.cases()
            ]
            note = "each case: about its budget on an H100; skipped when the part's time is short"
        out.append(
            {
                "key": part.key,
                "title": part.title,
                "budget_s": budgets[part.key],
                "note": note,
                "items": items,
            }
        )
    return out


def plan_text(planned: list[dict], cap_s: float = TOTAL_BUDGET_S) -> str:
    total = sum(p["budget_s"] for p in planned)
    lines = [
        f"On a GPU machine `make gpu-check` would run these parts (their budgets add up to "
        f"{total:.0f} s; the whole run, machine probe included, is capped at {cap_s:.0f} s; "
        f"give the device call timeout_s={cap_s + RUN_TIMEOUT_S - TOTAL_BUDGET_S:.0f}):"
    ]
    for part in planned:
        lines.append(f"  [{part['key']}] {part['title']}: budget {part['budget_s']:.0f} s")
        lines.append(f"    ({part['note']})")
        for item in part["items"]:
            budget = "" if item["budget_s"] is None else f"  ~{item['budget_s']:.0f} s"
            lines.append(f"    - {item['name']}{budget}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reports


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _measure_cell(m: dict[str, Any]) -> str:
    from gpu_common import time_text

    parts = [time_text(m["time_s"])]
    if "tflop_per_s" in m:
        parts.append(f"{m['tflop_per_s']:.1f} TFLOP/s")
    if "gb_per_s" in m:
        parts.append(f"{m['gb_per_s']:.0f} GB/s")
    return ", ".join(parts)


def _floor_cell(m: dict[str, Any]) -> str:
    from gpu_common import time_text

    bound = f" ({m['bound']})" if m.get("bound") else ""
    return time_text(m["time_s"]) + bound


def _percent(fraction: float) -> str:
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.2g}%"


def environment_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    env = report.get("environment", {})
    packages = env.get("packages", {})
    smi = env.get("nvidia_smi", {})
    tilelang = env.get("tilelang", {})
    git = report.get("git", {})
    commit = git.get("commit", "unknown")
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    rows = [
        ("card", env.get("device_name") or "none"),
        ("architecture", env.get("arch", "?")),
        ("driver", smi.get("driver") or smi.get("proc_version") or "?"),
        ("CUDA driver API", env.get("cuda_driver_api", "?")),
        ("CUDA (torch build)", env.get("torch_cuda_version") or "?"),
        ("NVRTC", env.get("nvrtc") or env.get("nvrtc_error", "?")),
        ("torch", packages.get("torch") or "not installed"),
        ("triton", packages.get("triton") or "not installed"),
        ("cuda-bindings", packages.get("cuda-bindings") or "not installed"),
        ("llvmlite", packages.get("llvmlite") or "not installed"),
        ("numpy", packages.get("numpy") or "not installed"),
        ("python", f"{env.get('python', '?')} ({env.get('executable', '?')})"),
        ("tilelang commit", commit),
        ("tilelang source hash", tilelang.get("source_hash", env.get("tilelang_error", "?"))),
        ("host", env.get("hostname", "?")),
    ]
    return rows


def render_markdown(report: dict[str, Any], brief: bool = False) -> str:
    out = ["# tilelang GPU self-check", ""]
    out.append(f"**Status: {report['status'].upper()}** — {report.get('summary', '')}")
    out.append("")
    out.append(f"- date: {report.get('date', '?')}")
    out.append(f"- command: `{report.get('command', '?')}`")
    if report.get("duration_s") is not None:
        out.append(
            f"- took {report['duration_s']:.0f} s (budget {report.get('budget_s', 0):.0f} s)"
        )
    out += ["", "## Machine", "", "| | |", "|---|---|"]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in environment_rows(report)]
    problems = report.get("environment", {}).get("import_problems")
    if problems:
        out += ["", "Imports that failed: " + "; ".join(problems)]
    parts = report.get("parts", [])
    if parts:
        out += ["", "## Parts", ""]
        out.append("| part | status | pass | fail | error | skip | timeout/crash | time / budget |")
        out.append("|---|---|---|---|---|---|---|---|")
        for part in parts:
            c = part["counts"]
            out.append(
                f"| {part['key']} | {part['status'].upper()} | {c['pass']} | {c['fail']} | "
                f"{c['error']} | {c['skip']} | {c['timeout'] + c['crash']} | "
                f"{part['elapsed_s']:.0f} s / {part['budget_s']:.0f} s |"
            )
        failures = [
            (part, r)
            for part in parts
            for r in part["results"]
            if r["status"] in ("fail", "error", "timeout", "crash")
        ]
        part_problems = [(part, p) for part in parts for p in part.get("problems", [])]
        if failures or part_problems:
            out += ["", "## Failures", ""]
            for part, problem in part_problems:
                out.append(f"- **{part['key']}**: {problem}")
            for part, result in failures:
                out += ["", f"### {part['key']}: {result['name']} ({result['status']})", ""]
                out += ["```", (result.get("message") or "").strip()[-3000:], "```"]
        skips = [(part, r) for part in parts for r in part["results"] if r["status"] == "skip"]
        if skips:
            out += ["", "## Skipped", ""]
            out += [f"- {part['key']}: {r['name']}: {r.get('message', '')}" for part, r in skips]
        out += benchmark_tables(parts, brief)
        if not brief:
            out += detail_tables(parts)
        rows = benchmark_rows_for_docs(report)
        if rows and not brief:
            out += ["", "## For docs/benchmarks.md", ""]
            out.append("| date | card | command | benchmark | ours | baseline (same run) | floor |")
            out.append("|---|---|---|---|---|---|---|")
            out += rows
    planned = report.get("plan")
    if planned:
        cap = report.get("budget_s", TOTAL_BUDGET_S)
        out += ["", "## What a GPU run would do", "", "```", plan_text(planned, cap), "```"]
    return "\n".join(out) + "\n"


def benchmark_tables(parts: list[dict[str, Any]], brief: bool = False) -> list[str]:
    out = []
    for part in parts:
        rows = [r for r in part["results"] if r.get("data", {}).get("kind") == "benchmark"]
        if not rows:
            continue
        out += ["", f"## {part['key']}: {part['title']}", ""]
        out.append(
            "| case | ours | baseline (same run) | floor | ours / baseline time | "
            "% of floor | host per call | check |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for r in rows:
            d = r["data"]
            host = d["timing"]["loop_s"]
            out.append(
                f"| {_cell(d['shape'])} | {_measure_cell(d['ours'])} | "
                f"{_cell(d['baseline']['label'])}: {_measure_cell(d['baseline'])} | "
                f"{_floor_cell(d['floor'])} | {d['ours_over_baseline']:.2f}x | "
                f"{_percent(d['fraction_of_floor'])} | {host * 1e6:.0f} us | "
                f"{'checked' if brief else _cell(d['check'])} |"
            )
        floors = sorted({r["data"]["floor"]["label"] for r in rows})
        out += ["", "Floors: " + "; ".join(floors) + "."]
        notes = [f"{r['data']['shape']}: {r['data']['notes']}" for r in rows if r["data"]["notes"]]
        methods = sorted({r["data"]["timing"]["method"] for r in rows})
        out += ["", "Timing: " + "; ".join(methods) + ". Host per call: host clock per call of"]
        out[-1] += " a loop of calls (the launch cost when it exceeds the device time)."
        if notes and not brief:
            out += ["", "Notes:", ""] + [f"- {_cell(n)}" for n in notes]
    return out


def detail_tables(parts: list[dict[str, Any]]) -> list[str]:
    out = []
    for part in parts:
        if any(r.get("data", {}).get("kind") == "benchmark" for r in part["results"]):
            continue
        out += ["", f"## {part['key']}: every case", "", "| case | status | result | time |"]
        out.append("|---|---|---|---|")
        for r in part["results"]:
            data = r.get("data") or {}
            summary = data.get("summary") or (r.get("message") or "").split("\n")[0][:200]
            elapsed = r.get("elapsed_s")
            seconds = f"{elapsed:.1f} s" if isinstance(elapsed, (int, float)) else ""
            out.append(f"| {_cell(r['name'])} | {r['status']} | {_cell(summary)} | {seconds} |")
    return out


def benchmark_rows_for_docs(report: dict[str, Any]) -> list[str]:
    env = report.get("environment", {})
    card = env.get("device_name", "?")
    date = (report.get("date") or "?")[:10]
    command = report.get("command", "make gpu-check")
    rows = []
    for part in report.get("parts", []):
        for r in part["results"]:
            d = r.get("data") or {}
            if d.get("kind") != "benchmark":
                continue
            rows.append(
                f"| {date} | {_cell(card)} | `{_cell(command)}` | {_cell(d['shape'])} | "
                f"{_measure_cell(d['ours'])} | {_cell(d['baseline']['label'])}: "
                f"{_measure_cell(d['baseline'])} | {_floor_cell(d['floor'])}: "
                f"{_cell(d['floor']['label'])} |"
            )
    return rows


def write_reports(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / REPORT_MD, out_dir / REPORT_JSON
    for path, text in (
        (js, json.dumps(report, indent=1, default=str) + "\n"),
        (md, render_markdown(report)),
    ):
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
    return md, js


def summarize(parts: list[dict[str, Any]]) -> str:
    pieces = []
    for part in parts:
        c = part["counts"]
        total = sum(c.values())
        bad = c["fail"] + c["error"] + c["timeout"] + c["crash"]
        text = f"{part['key']} {c['pass']}/{total} passed"
        if bad:
            text += f", {bad} failed"
        if c["skip"]:
            text += f", {c['skip']} skipped"
        pieces.append(text)
    return "; ".join(pieces) or "nothing ran"


# --------------------------------------------------------------------------- main


def output_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    return ROOT


def child_environment(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["TILELANG_CACHE_DIR"] = str(cache_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="directory for gpu-report.md/.json (default: $OUT, else .)")
    parser.add_argument("--dry-run", action="store_true", help="list what would run; run nothing")
    parser.add_argument(
        "--parts", default=",".join(PART_KEYS), help=f"comma-separated, of {', '.join(PART_KEYS)}"
    )
    parser.add_argument(
        "--budget-scale", type=float, default=1.0, help="multiply every time budget (e.g. 0.5)"
    )
    parser.add_argument("--python", default=sys.executable, help="the Python that runs the parts")
    parser.add_argument("--env-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=PART_KEYS, help=argparse.SUPPRESS)
    parser.add_argument("--indices", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts.split(",") if p and p not in PART_KEYS]
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}; the parts are {', '.join(PART_KEYS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.env_probe:
        print(json.dumps(probe_environment(), default=str))
        return 0
    if args.worker:
        indices = [int(i) for i in args.indices.split(",") if i]
        return worker(args.worker, indices, Path(args.results), args.seconds)

    started = time.monotonic()
    parts = [p for p in PARTS if p.key in args.parts.split(",")]
    budgets = {p.key: p.budget_s * args.budget_scale for p in parts}
    total_budget = TOTAL_BUDGET_S * args.budget_scale
    out_dir = output_dir(args.out)
    cache_dir = Path(tempfile.mkdtemp(prefix="gpu-check-cache-"))
    env = child_environment(cache_dir)
    given = sys.argv[1:] if argv is None else argv
    command = os.environ.get("TILELANG_GPU_CHECK_COMMAND") or " ".join(
        ["python3 benchmarks/gpu_check.py", *given]
    )
    report: dict[str, Any] = {
        "status": "running",
        "summary": "",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "budget_s": total_budget,
        "git": git_info(),
        "examples": [f"examples/{s}.py" for s in example_stems()],
    }
    print(f"GPU self-check: probing the machine ({args.python})", flush=True)
    environment = run_probe(args.python, env)
    report["environment"] = environment
    gpu, what = has_gpu(environment)
    report["gpu"] = what if gpu else None

    if args.dry_run or not gpu:
        tests, how = (
            collect_gpu_tests(args.python, env)
            if any(p.module is None for p in parts)
            else ([], "")
        )
        planned = plan(parts, budgets, tests, how)
        report["plan"] = planned
        if not gpu:
            report["status"] = "no GPU"
            report["summary"] = f"no GPU on this machine ({what}); nothing was run"
            print(f"\nNO GPU on this machine: {what}.\nNothing was run.\n", flush=True)
        else:
            report["status"] = "dry run"
            report["summary"] = f"dry run on {what}; nothing was run"
            print(f"\nDry run (a GPU is here: {what}). Nothing was run.\n", flush=True)
        print(plan_text(planned, total_budget), flush=True)
        report["duration_s"] = round(time.monotonic() - started, 1)
        md, js = write_reports(report, out_dir)
        shutil.rmtree(cache_dir, ignore_errors=True)
        print(f"\nwrote {md} and {js}", flush=True)
        return 0

    print(f"GPU: {what}", flush=True)
    if "tilelang" not in environment:
        # Nothing can run; the other failed imports (numpy, lark, ...) usually say why.
        problems = [f"tilelang: {environment.get('tilelang_error', '?')}"]
        problems += environment.get("import_problems", [])
        report["status"] = "fail"
        report["summary"] = "cannot run: " + "; ".join(problems)
        report["duration_s"] = round(time.monotonic() - started, 1)
        print(f"\nFAIL: {report['summary']}\n(see docs/gpu.md: make gpu-wheels)", flush=True)
        write_reports(report, out_dir)
        shutil.rmtree(cache_dir, ignore_errors=True)
        return 1

    report["parts"] = []
    report["summary"] = "running"
    write_reports(report, out_dir)  # something comes back even if the run is killed
    try:
        for part in parts:
            left = total_budget - (time.monotonic() - started)
            budget = min(budgets[part.key], max(left, 0.0))
            print(f"\n== {part.key}: {part.title} (budget {budget:.0f} s)", flush=True)
            if budget < MIN_PART_S:
                result = skipped_part(part, budget, total_budget)
            elif part.module is None:
                result = run_pytest_part(part, budget, args.python, env)
            else:
                result = run_case_part(part, budget, args.python, env)
            report["parts"].append(result)
            report["summary"] = summarize(report["parts"]) + " (running)"
            report["duration_s"] = round(time.monotonic() - started, 1)
            write_reports(report, out_dir)
    finally:
        failed = any(p["status"] != "pass" for p in report["parts"])
        report["status"] = "fail" if failed else "pass"
        report["summary"] = summarize(report["parts"])
        if len(report["parts"]) < len(parts):
            report["status"] = "fail"
            report["summary"] += " (interrupted)"
        report["duration_s"] = round(time.monotonic() - started, 1)
        md, js = write_reports(report, out_dir)
        shutil.rmtree(cache_dir, ignore_errors=True)
    print("\n" + render_markdown(report, brief=True), flush=True)
    print(f"wrote {md} and {js}", flush=True)
    return 0 if report["status"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
