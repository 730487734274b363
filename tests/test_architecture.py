"""The shape of the package (docs/design.md §1): imports flow one way, nothing imports
back up to the package root, the GPU path never loads the CPU backend, and no module
grows past what one reader holds in mind."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tilelang"
MAX_LINES = 800

#: What each component may import (its own modules are always allowed). A component is
#: the first name under `tilelang` (`ir`, `lowering`, `kernel`, ...).
ALLOWED: dict[str, set[str]] = {
    "version": set(),
    # Who says a kernel spills: the passes describe it, the GPU build asks ptxas, the
    # tuner prunes on it; it imports nothing.
    "spill_verdict": set(),
    "target": set(),
    "dtypes": set(),
    "ir": {"dtypes"},
    "analysis": {"dtypes", "ir"},
    "lang": {"dtypes", "ir"},
    "packing": {"dtypes", "ir"},
    "codegen": {"dtypes", "ir"},
    "passes": {"dtypes", "ir", "analysis", "target", "spill_verdict"},
    "lowering": {"dtypes", "ir", "analysis", "target"},
    "pipeline": {"ir", "passes", "lowering", "target"},
    "runtime": {"dtypes", "ir", "codegen", "target", "version", "spill_verdict"},
    "kernel": {"dtypes", "ir", "lang", "pipeline", "runtime", "target"},
    "op_reference": {"ir", "lang", "lowering", "runtime"},
    "cli": {"dtypes", "ir", "kernel", "runtime", "target", "op_reference", "tuning", "aot"},
    # Ahead-of-time builds sit above the kernel object: they compile through it and
    # generate C from its thread IR (the CPU object through the LLVM emitter).
    "aot": {"dtypes", "ir", "codegen", "kernel", "runtime", "target", "version"},
    # The quantized-linear library sits above the kernel object (its matmuls are DSL
    # kernels); its formats, quantize and checkpoint import need only dtypes today.
    # Library calls tune their tiles with the autotuner (tilelang.tuning.library).
    "quant": {"dtypes", "ir", "lang", "packing", "kernel", "runtime", "target", "tuning"},
    # The autotuner sits above the kernel object: it binds arguments with the kernel's
    # checks, compiles through it and keeps its records in the runtime's disk cache.
    "tuning": {"kernel", "runtime", "target", "spill_verdict"},
    # Ready kernels (attention, SSM scans, norms) sit above the kernel object, as quant.
    "kernels": {"dtypes", "lang", "kernel", "runtime", "tuning"},
    # The torch bridge is the top: it registers kernels, quant and kernels as torch ops.
    "torch": {"dtypes", "ir", "lang", "kernel", "runtime", "quant", "kernels"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(name: str) -> set[str]:
    """Every tilelang module `name` imports, at the top or inside a function (an
    `if TYPE_CHECKING:` block is not an import at run time)."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tilelang"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.startswith("tilelang"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES} - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def component(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_no_module_imports_the_package_root():
    offenders = sorted(n for n, deps in GRAPH.items() if "tilelang" in deps)
    assert not offenders, f"these import names from tilelang/__init__.py: {offenders}"


def test_imports_have_no_cycles():
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = visiting[visiting.index(name) :] + [name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        visiting.append(name)
        for dep in sorted(GRAPH[name]):
            visit(dep)
        visiting.pop()
        done.add(name)

    for name in sorted(GRAPH):
        visit(name)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "tilelang"))
def test_imports_follow_the_layers(name):
    own = component(name)
    assert own in ALLOWED, f"{name}: a new component; give it a row in ALLOWED"
    for dep in sorted(GRAPH[name]):
        other = component(dep)
        assert other == own or other in ALLOWED[own], (
            f"{name} imports {dep}: {own} may import only {sorted(ALLOWED[own])}"
        )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concern"


def closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(GRAPH[name])
    return seen


@pytest.mark.parametrize("start", ["tilelang.runtime.gpu", "tilelang.runtime.cuda_build"])
def test_the_gpu_path_does_not_import_the_cpu_backend(start):
    cpu = {n for n in MODULES if n.startswith("tilelang.codegen.llvm")} | {"tilelang.runtime.cpu"}
    assert not closure(start) & cpu


def test_compiling_for_a_gpu_loads_no_llvm(tmp_path, monkeypatch):
    """In a fresh process: a GPU build, from source and from the disk cache, never loads
    llvmlite or the LLVM emitter."""
    script = (
        "import sys, tilelang as tl\n"
        "@tl.kernel(warps=1)\n"
        "def k(x: tl.Tensor[tl.f32, 'N'], y: tl.Tensor[tl.f32, 'N']):\n"
        "    tl.store(y, [0], tl.load(x, [0], [32]) * 2.0)\n"
        "k.compile(target='sm_90').cubin\n"
        "loaded = [m for m in sys.modules if m.startswith(('llvmlite', 'tilelang.codegen.llvm'))]\n"
        "assert not loaded, loaded\n"
    )
    (tmp_path / "k.py").write_text(script)  # kernels are read from their source file
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path / "cache"))
    for attempt in ("build", "disk-cache hit"):
        result = subprocess.run(
            [sys.executable, str(tmp_path / "k.py")], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{attempt}: {result.stderr}"
