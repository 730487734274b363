"""Shared test helpers: the examples directory is importable as plain modules, the
SASS disassembler the tests that read cubins need (`disassembler`), and the checks
several test files make: an error reported at a marked source line (`marked_line`,
`assert_reported`), the IR's text form and verifier (`assert_text_round_trips`,
`assert_edit_rejected`), the CPU backend against the interpreter (`run_both`,
`assert_bitwise`) and a float64 reference within a relative tolerance (`assert_close`)."""

import importlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import settings

from tilelang import PackedArray, TileLangError, pack_codes
from tilelang.ir import thread as t
from tilelang.ir.checks import IRVerifyError
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.verify import verify
from tilelang.runtime import call_plans
from tilelang.target import TARGETS

# CI runs the same examples every time (a red run must mean a change broke something);
# TILELANG_HYPOTHESIS=explore draws new ones, to hunt for bugs that become regression tests.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("TILELANG_HYPOTHESIS", "ci"))

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def _fresh_call_plans():
    """Every test starts with no library call plans: tests change the world a plan was
    recorded in (a stubbed launch, another device arch, autotuning on or off)."""
    call_plans.clear_all()


def load_example(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


@pytest.fixture
def example():
    return load_example


def require_disassembler() -> None:
    """Fails (never skips) without a SASS disassembler: the test extra installs one
    (nvidia-cuda-nvdisasm), so its absence is a broken install, not a reason to pass."""
    from tilelang.runtime import sass

    assert sass.find_disassembler() is not None, (
        "no SASS disassembler: install the test extra (pip install -e '.[test]')"
    )


@pytest.fixture
def disassembler() -> None:
    """`require_disassembler` for a test: `@pytest.mark.usefixtures("disassembler")`."""
    require_disassembler()


# --------------------------------------------------------------------------- shared checks


def marked_line(fn, marker: str = "# <- error") -> int:
    """The file line of the source line of `fn` (a kernel or a function) carrying `marker`."""
    lines, first = inspect.getsourcelines(fn.fn if hasattr(fn, "fn") else fn)
    for offset, line in enumerate(lines):
        if marker in line:
            return first + offset
    raise AssertionError(f"no line of {fn.__name__} carries {marker!r}")


def compile_error(kernel, **constexprs) -> TileLangError:
    """The `TileLangError` that specializing `kernel` at `constexprs` raises."""
    with pytest.raises(TileLangError) as info:
        kernel.specialize(**constexprs)
    return info.value


def assert_reported(kernel, *fragments: str, **constexprs) -> TileLangError:
    """Specializing `kernel` fails at its line marked ``# <- error``, in its file, with
    every fragment in the message."""
    error = compile_error(kernel, **constexprs)
    assert error.loc is not None and error.loc.line == marked_line(kernel), str(error)
    assert error.loc.file == inspect.getsourcefile(kernel.fn)
    text = str(error)
    for fragment in fragments:
        assert fragment in text, text
    return error


def assert_text_round_trips(*functions) -> None:
    """Each block-IR function verifies and prints to text that parses back to it."""
    for fn in functions:
        verify(fn)
        assert parse_function(print_function(fn)) == fn


def assert_edit_rejected(text: str, before: str, after: str, fragment: str) -> None:
    """`text` (a kernel in IR text) with `before` replaced by `after` fails to verify
    with `fragment` in the message (`before` must be in `text`)."""
    assert before in text
    with pytest.raises(IRVerifyError, match=fragment):
        verify(parse_function(text.replace(before, after)))


def run_both(kernel, inputs, outputs, **constexprs):
    """(compiled, interpreted): the kernel's outputs from each path, on separate copies."""
    compiled = kernel(*inputs, *(o.copy() for o in outputs), **constexprs)
    interpreted = kernel.interpret(*inputs, *(o.copy() for o in outputs), **constexprs)
    return compiled, interpreted


def assert_bitwise(compiled, interpreted) -> None:
    """The same arrays (or tuples of arrays) bit for bit: dtype, shape and every bit of
    every element (a NaN equals only the same NaN; -0.0 differs from +0.0)."""
    pairs = zip(
        compiled if isinstance(compiled, tuple) else (compiled,),
        interpreted if isinstance(interpreted, tuple) else (interpreted,),
        strict=True,
    )
    for got, want in pairs:
        assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype)
        bits = np.dtype(f"u{got.dtype.itemsize}")
        differ = got.view(bits) != want.view(bits)
        if differ.any():
            where = tuple(int(i) for i in np.argwhere(differ)[0])
            pytest.fail(
                f"{int(differ.sum())} of {differ.size} elements differ, first at {where}: "
                f"compiled {got[where]!r}, interpreted {want[where]!r}"
            )


def assert_close(got, expected, rtol: float) -> None:
    """`got` is finite, has the reference's shape and is within `rtol` of its largest
    magnitude (at least 1) of the float64 reference `expected`."""
    got = np.asarray(got, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert np.isfinite(got).all()
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= rtol * scale, np.abs(got - expected).max()


class Lets:
    """The recipes' Emit protocol (`tilelang.lowering.bits.Emit`), optionally with a
    target (a name of `tilelang.target.TARGETS`): collects the Let statements asked for."""

    def __init__(self, target: str | None = None) -> None:
        self.target = None if target is None else TARGETS[target]
        self.stmts: list[t.Stmt] = []

    def let(self, value: t.Expr, hint: str = "t") -> t.Expr:
        name = t.Name(f"{hint}_{len(self.stmts)}", value.dtype)
        self.stmts.append(t.Let(name, value))
        return name


class Device:
    """A device tensor stand-in over host memory: what the launcher reads of one
    (`__cuda_array_interface__`; a PackedArray as its bytes). Nothing launches: tests
    that use it record the launches instead."""

    def __init__(self, host):
        packed = isinstance(host, PackedArray)
        self.data = host.data if packed else np.ascontiguousarray(host)
        self.dtype = host.dtype if packed else None
        self.shape = tuple(host.shape)

    @classmethod
    def empty(cls, shape, dtype):
        """An output (`DeviceBuffer.empty`): made, not copied from anything."""
        return cls(np.empty(shape, dtype))

    @property
    def __cuda_array_interface__(self):
        packed = self.dtype is not None
        return {
            "data": (self.data.ctypes.data, False),
            "shape": (self.data.nbytes,) if packed else self.shape,
            "typestr": "|u1" if packed else self.data.dtype.str,
            "version": 3,
        }


def run_python(code: str, cache_dir: Path, **variables: object) -> dict:
    """Runs `code` in a fresh interpreter (the examples importable, `variables` set, the
    disk cache at `cache_dir`); it prints one JSON object as its last line, returned."""
    prelude = f"import sys\nsys.path.insert(0, {str(EXAMPLES)!r})\n"
    prelude += "".join(f"{name} = {value!r}\n" for name, value in variables.items())
    env = {**os.environ, "TILELANG_CACHE_DIR": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLES.parent,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def unstageable_gather():
    """A fresh kernel object each call (nothing shared in memory) whose loop's gather
    the pipelining pass cannot stage (cp.async cannot fill with 1): it warns at the
    loop's line, for every target."""
    return staged_gather(fill=1.0)


def staged_gather(fill=None):
    """A fresh kernel summing the rows a table names, gathered in a `stages=2` loop;
    rows outside the tensor read `fill` (None: zeros, which cp.async can copy ahead)."""
    import tilelang as tl

    @tl.kernel(warps=4)
    def staged(
        cache: tl.Tensor[tl.f16, "N", 64],
        ids: tl.Tensor[tl.i32, "R"],
        out: tl.Tensor[tl.f32, 1, 64],
    ):
        acc = tl.zeros([1, 64], tl.f32)
        for r in tl.range(0, R, 16, stages=2):
            rows = tl.load(ids, [r], [16], fill=-1)
            x = tl.load(cache, [rows[:, None], 0], [16, 64], fill=fill)
            acc = acc + tl.sum(x.to(tl.f32), axis=0)
        tl.store(out, [0, 0], acc)

    return staged


# -------------------------------------------------- helpers of the memory-access tests

#: numpy's type of each whole-byte dtype name the masked-access tests use.
NUMPY_OF = {"f32": np.float32, "f16": np.float16, "u8": np.uint8, "i32": np.int32, "i64": np.int64}


def statements(compiled, kind: type) -> list:
    """The thread-IR statements of one kind in a compiled kernel."""
    return [s for s in t.walk_stmts(compiled.thread.body) if isinstance(s, kind)]


def plain(array) -> np.ndarray:
    """Codes of packed arrays, values of numpy ones."""
    return array.codes() if isinstance(array, PackedArray) else np.array(array)


def runs(kernel):
    """The interpreter and the CPU backend of `kernel`: the two a law must hold on."""
    return (kernel.interpret, kernel)


def values_of(rng, dtype, shape, floats=None) -> np.ndarray:
    """Random arguments of `dtype`: packed codes for a sub-byte type; for floats,
    `floats(rng, shape)` (default: standard normal); for integers, 0..99."""
    if dtype.bits < 8:
        return pack_codes(rng.integers(0, 2**dtype.bits, shape).astype(np.uint8), dtype)
    if dtype.is_float:
        drawn = floats(rng, shape) if floats else rng.standard_normal(shape)
        return drawn.astype(NUMPY_OF[dtype.name])
    return rng.integers(0, 100, shape).astype(NUMPY_OF[dtype.name])


#: The numpy scalar type of a kernel argument of each 16-bit-or-wider tilelang dtype.
NUMPY_TYPES = {
    "f16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "f32": np.float32,
    "f64": np.float64,
    "i32": np.int32,
    "u32": np.uint32,
    "i64": np.int64,
    "u64": np.uint64,
}


def typed(codes: np.ndarray, dtype) -> np.ndarray:
    """A copy of `codes` as the numpy array type a kernel argument of `dtype` is."""
    return codes.copy().view(NUMPY_TYPES[dtype.name])


#: A kernel whose line LINE an atomic's text form replaces (T: its dtype), for the
#: text-form and verifier tests of atomics.
ATOMIC_TEXT = (
    "kernel k(%y: tensor<T, [N]>) sizes(%N: i32) warps(1) {\n"
    "  %b = blocks 1:i32 : i32\n"
    "  %v = full 1:T : tile<T, [32]>\n"
    "  %i = arange 0 : tile<i32, [32]>\n"
    "  %m = lt %i, 5:i32 : tile<u1, [32]>\n"
    '  LINE  loc("user.py":7:5)\n'
    "}\n"
)
