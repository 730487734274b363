"""A grid a GPU would refuse (y or z above 65535 blocks, x above 2^31 - 1) is refused
before anything runs, on every path: the CPU backend (which keeps the GPU's limits), the
GPU runtime (before any driver call) and the C launchers of an ahead-of-time build, in
the same words: which dimension, the user's expression for it, its value, the limit,
and what to do about it."""

import inspect
from pathlib import Path

import numpy as np
import pytest
from test_aot import STATUS_CODES, compile_c, report, run_program, write_runner

import tilelang as tl
from tilelang.cli import main


@tl.kernel(warps=1)
def bscale(
    x: tl.Tensor[tl.f32, "B", "M", "N"],
    out: tl.Tensor[tl.f32, "B", "M", "N"],
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    b, bm, bn = tl.blocks(B, tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.load(x, [b, bm * BM, bn * BN], [BM, BN])
    tl.store(out, [b, bm * BM, bn * BN], tile * 2.0)


#: A grid of three scalars, written to a file for the ahead-of-time builds.
SPREAD = """import tilelang as tl


@tl.kernel(warps=1)
def spread(out: tl.Tensor[tl.i32, "N"], nx: tl.i32, ny: tl.i32, nz: tl.i32):
    bx, by, bz = tl.blocks(nx, ny, nz)
    tl.store(out, [bx], tl.full([1], 1, tl.i32))
"""


def blocks_line(fn) -> str:
    """ "FILE:LINE" of the `tl.blocks` line of `fn`, from its own source."""
    lines, first = inspect.getsourcelines(fn)
    offset = next(i for i, text in enumerate(lines) if "tl.blocks(" in text)
    return f"{inspect.getsourcefile(fn)}:{first + offset}"


def too_large(kernel: str, at: str, axis: int, expr: str, blocks: int) -> str:
    """The message the issue asks for, written out from its words here."""
    name, limit = "xyz"[axis], (2**31 - 1, 65535, 65535)[axis]
    return (
        f"{kernel}() at {at}: the grid is too large: dimension {axis} ({name}), {expr}, is "
        f"{blocks} blocks, above the {limit} a GPU launch allows in dimension {name}; put "
        "the largest dimension first in tl.blocks (dimension x allows up to 2147483647 blocks)"
    )


def test_the_cpu_backend_refuses_a_y_dimension_a_gpu_would_refuse():
    at = blocks_line(bscale.fn)
    m = 16 * 65536  # 65536 blocks along y: one more than a GPU launch takes
    x = np.ones((1, m, 1), np.float32)
    out = np.full_like(x, -1.0)
    with pytest.raises(ValueError) as info:
        bscale(x, out)
    assert str(info.value) == too_large("bscale", at, 1, "tl.cdiv(M, BM)", 65536)
    assert (out == -1.0).all()  # nothing ran
    # The edge itself is a launch a GPU takes: 65535 blocks along y run.
    x = np.arange(16 * 65535, dtype=np.float32).reshape(1, -1, 1)
    out = bscale(x, np.zeros_like(x))
    np.testing.assert_array_equal(out, x * 2)


@pytest.fixture(scope="module")
def spread_build(tmp_path_factory) -> tuple[Path, dict[str, Path], object]:
    """`SPREAD` built for the CPU and sm_80, a C program calling each, and the kernel."""
    out = tmp_path_factory.mktemp("spread")
    source = out / "aot_spread.py"
    source.write_text(SPREAD)
    assert (
        main(["compile", f"{source}:spread", "--arch", "cpu", "--arch", "sm_80", "-o", str(out)])
        == 0
    )
    body = (
        """
    int32_t out[4] = {-1, -1, -1, -1};
    int64_t shape[1] = {4};
    int code = spread(NULL, out, shape, atoi(argv[1]), atoi(argv[2]), atoi(argv[3]));
    """
        + report("spread")
        + """
    fprintf(stderr, "%d %d %d %d", out[0], out[1], out[2], out[3]);
    return 0;
    """
    )
    runner = write_runner(out / "run.c", "spread.h", body)
    cpu = compile_c(out / "run_cpu", [runner], [str(out / "libspread_cpu.so"), f"-Wl,-rpath,{out}"])
    gpu = compile_c(out / "run_gpu", [runner, out / "spread.c"], ["-ldl", "-lpthread"])
    import importlib.util

    spec = importlib.util.spec_from_file_location("aot_spread", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return out, {"cpu": cpu, "gpu": gpu}, module.spread


@pytest.mark.parametrize(("grid", "axis"), [((1, 65536, 1), 1), ((1, 1, 70000), 2)])
def test_the_c_launchers_refuse_the_grid_in_the_words_of_the_python_runtime(
    spread_build, tmp_path, grid, axis
):
    out, programs, kernel = spread_build
    line = next(i for i, text in enumerate(SPREAD.splitlines(), 1) if "tl.blocks(" in text)
    expected = too_large("spread", f"aot_spread.py:{line}", axis, "n" + "xyz"[axis], grid[axis])
    with pytest.raises(ValueError) as info:
        kernel(np.full(4, -1, np.int32), *grid)
    assert str(info.value) == expected.replace(" at ", f" at {out}/", 1)
    no_driver = {"TILELANG_LIBCUDA": str(tmp_path / "no-such-libcuda.so.1")}
    for program, env in ((programs["cpu"], None), (programs["gpu"], no_driver)):
        code, _, message = run_program(program, *grid, env=env)
        assert code == STATUS_CODES["ERROR_LAUNCH_CHECK"], message
        assert message == expected  # the build names the file relative to where it ran
    # 65535 along y or z is within the limit: the CPU library runs it.
    code, _, message = run_program(programs["cpu"], 1, 1, 65535)
    assert code == STATUS_CODES["OK"], message


def test_the_gpu_runtime_refuses_the_grid_before_any_driver_call(spread_build):
    from tilelang.runtime import gpu

    _, _, kernel = spread_build
    launcher = gpu.Launcher(kernel.compile(target="sm_80", assume=None).cuda)
    scalars = {"nx": 1, "ny": 1, "nz": 65536, "N": 4}
    with pytest.raises(
        ValueError, match=r"dimension 2 \(z\), nz, is 65536 blocks, above the 65535"
    ):
        launcher({"out": 0x10000}, scalars, (1, 1, 65536), 0)  # no GPU here: refused first
    with pytest.raises(ValueError, match=r"the grid is negative \(-1 blocks in dimension 1\)"):
        launcher({"out": 0x10000}, scalars, (1, -1, 1), 0)
    launcher({"out": 0x10000}, scalars, (1, 0, 1), 0)  # empty: nothing to launch, no driver
