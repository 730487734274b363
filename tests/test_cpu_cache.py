"""CPU builds through the disk cache (tilelang.runtime.cpu_build): a warm compile in a
fresh process runs no pass, no lowering, no LLVM emission or optimization and gives the
cold compile's bits; damaged or unusable entries are rebuilt; the key follows the host
and the JIT pipeline; the passes' warnings are given again on a hit."""

import hashlib
import inspect
import json
import sys
import warnings
from pathlib import Path

import llvmlite
import llvmlite.binding
import numpy as np
import pytest
from conftest import load_example, run_python, unstageable_gather

import tilelang as tl
from tilelang.kernel import CompiledKernel
from tilelang.runtime import cpu
from tilelang.runtime.cache import ENTRY, DiskCache
from tilelang.runtime.cpu_build import cpu_build

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    return DiskCache()


def softmax_reference(x: np.ndarray) -> np.ndarray:
    """Row softmax in float64, written from its definition."""
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def inputs() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((37, 300)).astype(np.float32) * 3


def fresh_softmax():
    """A new kernel object over the example's function: nothing shared in memory."""
    return tl.kernel(warps=4)(load_example("softmax").softmax.fn)


# --------------------------------------------------------------------------- fresh processes

WARM = """
    import hashlib, json
    import numpy as np
    import tilelang.pipeline
    from tilelang.codegen import llvm as codegen_llvm
    from tilelang.runtime import cpu
    from softmax import softmax

    def forbidden(*args, **kwargs):
        raise AssertionError("a pass, the lowering or LLVM ran on a warm compile")

    kernel_module = sys.modules["tilelang.kernel"]  # tilelang.kernel is the decorator
    saved = {}
    if FORBID:
        for module, name in [
            (tilelang.pipeline, "run_pipeline"), (tilelang.pipeline, "lower_function"),
            (kernel_module, "run_pipeline"), (kernel_module, "lower_function"),
            (cpu, "_optimize"), (cpu, "lower_to_llvm"), (cpu, "compile_llvm_ir"),
            (cpu, "verify_thread_function"), (codegen_llvm, "lower_to_llvm"),
        ]:
            saved[module, name] = getattr(module, name)
            setattr(module, name, forbidden)
    x = np.random.default_rng(7).standard_normal((37, 300)).astype(np.float32) * 3
    y = softmax(x, np.empty_like(x))
    compiled = next(iter(next(iter(softmax._specializations.values())).compiled.values()))
    for (module, name), value in saved.items():
        setattr(module, name, value)  # the IR text below is emitted again, on demand
    print(json.dumps({
        "cached": compiled.cpu_build.cached,
        "y": y.tobytes().hex(),
        "llvm_ir": hashlib.sha256(compiled.cpu.llvm_ir.encode()).hexdigest(),
    }))
"""


def test_a_warm_compile_in_a_fresh_process_runs_no_pass_and_no_llvm(tmp_path):
    cold = run_python(WARM, tmp_path, FORBID=False)
    warm = run_python(WARM, tmp_path, FORBID=True)
    assert not cold["cached"] and warm["cached"]
    assert warm["y"] == cold["y"]  # bit for bit
    assert warm["llvm_ir"] == cold["llvm_ir"]
    y = np.frombuffer(bytes.fromhex(warm["y"]), np.float32).reshape(37, 300)
    np.testing.assert_allclose(y, softmax_reference(inputs()), rtol=1e-5, atol=1e-7)


def test_the_forbidden_steps_do_run_on_a_cold_compile(tmp_path):
    """The warm test's patches catch a compile that is not served from the disk."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError, match="a pass, the lowering or LLVM ran"):
        run_python(WARM, tmp_path / "empty", FORBID=True)


# --------------------------------------------------------------------------- damaged entries


def only_entry(cache: DiskCache) -> str:
    (entry,) = cache.entries()
    assert entry.problem is None
    return entry.key


def run_softmax() -> tuple[CompiledKernel, np.ndarray]:
    kernel = fresh_softmax()
    x = inputs()
    y = kernel(x, np.empty_like(x))
    compiled = next(iter(next(iter(kernel._specializations.values())).compiled.values()))
    return compiled, y


def test_a_truncated_entry_is_rebuilt(cache):
    _, first = run_softmax()
    key = only_entry(cache)
    path = cache.root / key[:2] / key / ENTRY
    path.write_bytes(path.read_bytes()[:-100])
    compiled, again = run_softmax()
    assert not compiled.cpu_build.cached
    assert again.tobytes() == first.tobytes()
    compiled, third = run_softmax()  # the rebuild was stored
    assert compiled.cpu_build.cached and third.tobytes() == first.tobytes()


@pytest.mark.parametrize("damage", ["flip", "truncate", "no meta", "bad meta", "bad thread"])
def test_an_entry_with_unusable_contents_is_rebuilt(cache, damage):
    """Entries with a valid checksum (written through the cache) whose contents are
    damaged: LLVM must never see a damaged object (a truncated one crashes it)."""
    _, first = run_softmax()
    key = only_entry(cache)
    blobs = cache.get(key)
    good = blobs["object"]
    if damage == "flip":
        middle = len(good) // 2
        blobs["object"] = good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :]
    elif damage == "truncate":
        blobs["object"] = good[: len(good) // 2]
    elif damage == "no meta":
        del blobs["meta"]
    elif damage == "bad meta":
        blobs["meta"] = json.dumps({"workspace_bytes": "many"}).encode()
    else:
        blobs["thread"] = b"not a pickle"
    cache.put(key, blobs)
    compiled, again = run_softmax()
    assert again.tobytes() == first.tobytes()
    if damage == "bad thread":
        assert compiled.cpu_build.cached  # the object loaded; the thread IR was lowered again
        assert cache.get(key) is None  # and the entry discarded, for the next compile
    else:
        stored = cache.get(key)
        assert stored is not None and stored["object"] == good  # rebuilt and stored again
    np.testing.assert_allclose(again, softmax_reference(inputs()), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- the key


def test_the_key_follows_the_host_llvm_and_the_pipeline(cache, monkeypatch):
    thread = fresh_softmax().compile().thread

    def key() -> str:
        return cpu_build(("softmax",), lambda: thread).key

    cpu.jit_identity()  # the target machine made: the host facts are known
    base = key()
    assert key() == base
    changes = [
        lambda: monkeypatch.setitem(cpu._STATE, "cpu", "another-cpu"),
        lambda: monkeypatch.setitem(cpu._STATE, "features", "+sse2,-avx2"),
        lambda: monkeypatch.setattr(cpu, "JIT_PIPELINE", cpu.JIT_PIPELINE + ",licm"),
        lambda: monkeypatch.setattr(llvmlite.binding, "llvm_version_info", (99, 0, 0)),
        lambda: monkeypatch.setattr(llvmlite, "__version__", "0.0.1"),
        lambda: monkeypatch.setattr(llvmlite.binding, "get_process_triple", lambda: "x-y-z"),
    ]
    keys = {base}
    for change in changes:
        change()
        keys.add(key())
        monkeypatch.undo()
        monkeypatch.setenv("TILELANG_CACHE_DIR", str(cache.root))
    assert len(keys) == 1 + len(changes)
    assert key() == base


def test_another_host_misses_the_entry(cache, monkeypatch):
    compiled, _ = run_softmax()
    assert not compiled.cpu_build.cached
    monkeypatch.setitem(cpu._STATE, "cpu", "another-cpu")
    compiled, _ = run_softmax()
    assert not compiled.cpu_build.cached
    monkeypatch.undo()
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(cache.root))
    compiled, _ = run_softmax()
    assert compiled.cpu_build.cached


def test_the_pipeline_version_names_the_passes_that_run(monkeypatch):
    """`JIT_PIPELINE` is made from the passes `_optimize` runs, so it cannot go stale."""
    ran = []

    class Recorder:
        def __getattr__(self, name):
            return lambda *args: ran.append(name)

    llvm, tm = cpu._llvm()
    monkeypatch.setattr(llvm, "create_new_module_pass_manager", Recorder)
    cpu._optimize(llvm, tm, None)
    added = [name.removeprefix("add_").removesuffix("_pass") for name in ran if name != "run"]
    assert ",".join(added) in cpu.JIT_PIPELINE


# --------------------------------------------------------------------------- warnings


def compile_warning(kernel) -> tuple[CompiledKernel, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = kernel.compile(target="cpu")
    said = [(w.category, str(w.message), w.filename, w.lineno) for w in caught]
    return compiled, said


def test_a_hit_gives_the_passes_warnings_again(cache):
    from tilelang.passes.software_pipeline import PipelineWarning

    first, said = compile_warning(unstageable_gather())
    assert any(category is PipelineWarning and "gather" in m for category, m, _, _ in said)
    where = inspect.getsourcefile(unstageable_gather)  # the kernel's source: the user's line
    assert all(file == where for _, _, file, _ in said)
    _ = first.cpu  # the machine code made: the entry written
    again, repeated = compile_warning(unstageable_gather())
    assert again.cpu_build.cached
    assert repeated == said
    ids = np.array([3, 0, 1, 2] * 4, np.int32)
    table = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float16)
    out = np.zeros((1, 64), np.float32)
    again.cpu.launch({"cache": table, "ids": ids, "out": out, "N": 4, "R": 16})
    expected = table.astype(np.float64)[ids].sum(axis=0)
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)


def test_a_lowering_that_fails_still_gives_the_warnings_before_it(cache, monkeypatch):
    from tilelang.passes.software_pipeline import PipelineWarning

    def broken(*args, **kwargs):
        raise RuntimeError("the lowering broke")

    monkeypatch.setattr(sys.modules["tilelang.kernel"], "lower_function", broken)
    with pytest.warns(PipelineWarning, match="gather"), pytest.raises(RuntimeError, match="broke"):
        unstageable_gather().compile(target="cpu")


def test_a_stored_object_is_what_was_compiled(cache):
    """The object in the entry is MCJIT's own output for the module that ran."""
    compiled, _ = run_softmax()
    blobs = cache.get(only_entry(cache))
    assert blobs["object"] == compiled.cpu.compiled.object
    meta = json.loads(blobs["meta"])
    assert meta["sha256"] == hashlib.sha256(blobs["object"]).hexdigest()
    assert meta["workspace_bytes"] == compiled.cpu.lowered.workspace_bytes
    assert meta["stored_tensors"] == ["y"]
