"""Ahead-of-time builds (`tilelang compile`, `tilelang.aot`): the generated C compiles
with a plain C compiler and no CUDA header, the CPU library computes what numpy does
when a C program calls it, arguments are checked before anything runs, the GPU
launcher says clearly when there is no driver or device, the PTX declares the ISA
asked for, and the manifest describes every file it lists."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, load_example

import tilelang as tl
from tilelang.aot import STATUS_CODES, AotError, parse_isa
from tilelang.aot.ptx import ptx_isa, required_isa, retarget_ptx
from tilelang.cli import main

OK = STATUS_CODES["OK"]

KERNELS = """
import tilelang as tl


@tl.kernel(warps=1)
def stepped(out: tl.Tensor[tl.i32, "N"], step: tl.i32):
    assert step < 100, "steps are below 100"
    count = 0
    for _ in tl.range(0, N, step):
        count = count + 1
    tl.store(out, [0], tl.full([1], count, tl.i32))


@tl.kernel(warps=2)
def axpy(
    x: tl.Tensor[tl.f16, "N"],
    y: tl.Tensor[tl.f32, "N"],
    out: tl.Tensor[tl.f32, "N"],
    a: tl.f32,
    BLOCK: tl.constexpr = 256,
):
    b = tl.blocks(tl.cdiv(N, BLOCK))
    start = b * BLOCK
    x_values = tl.load(x, [start], [BLOCK]).to(tl.f32)
    tl.store(out, [start], x_values * a + tl.load(y, [start], [BLOCK]))
"""

#: A grid from a scalar (a negative one is refused) and a u1 flag (only 0 and 1 are u1s).
FLAGGED = """
import tilelang as tl


@tl.kernel(warps=1)
def flagged(out: tl.Tensor[tl.i32, "N"], n: tl.i32, flag: tl.u1):
    b = tl.blocks(n)
    tl.store(out, [b], tl.where(flag, tl.full([1], 5, tl.i32), tl.full([1], 9, tl.i32)))
"""

#: Reading and writing raw files, for the C programs the tests write.
C_IO = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

static inline void *read_file(const char *path, long *size) {
  FILE *f = fopen(path, "rb");
  void *data;
  if (!f) { perror(path); exit(2); }
  fseek(f, 0, SEEK_END);
  *size = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = aligned_alloc(64, (size_t)(*size + 64));
  if (fread(data, 1, (size_t)*size, f) != (size_t)*size) { perror(path); exit(2); }
  fclose(f);
  return data;
}

static inline void write_file(const char *path, const void *data, long size) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, (size_t)size, f) != (size_t)size) { perror(path); exit(2); }
  fclose(f);
}
"""


def c_compiler() -> str:
    found = shutil.which(os.environ.get("CC") or "cc")
    assert found is not None, "no C compiler (cc): a CI machine without one is broken"
    return found


def compile_c(out: Path, sources: list[Path], libraries: list[str] = ()) -> Path:
    command = [c_compiler(), "-std=c11", "-Wall", "-Werror", "-O1", "-I", str(sources[0].parent)]
    command += ["-o", str(out), *map(str, sources), *libraries]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}{done.stderr}"
    return out


def run_program(program: Path, *args: object, env: dict | None = None) -> tuple[int, str, str]:
    """Runs a test program; it prints the status code, its description and the message."""
    done = subprocess.run(
        [str(program), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    code, description, message = (done.stdout.split("\n") + ["", "", ""])[:3]
    return int(code), description, message


def write_runner(path: Path, include: str, body: str, prelude: str = "") -> Path:
    """A C program: the file helpers, `include`, `prelude`, then `main` with `body`."""
    main_function = (
        f"int main(int argc, char **argv) {{\n{textwrap.indent(textwrap.dedent(body), '  ')}}}\n"
    )
    path.write_text(f'{C_IO}\n#include "{include}"\n{prelude}\n{main_function}')
    return path


def report(name: str) -> str:
    """The C lines that print a call's status, description and message."""
    return f'printf("%d\\n%s\\n%s\\n", code, {name}_error_string(code), {name}_last_error());\n'


# --------------------------------------------------------------------------- builds


@pytest.fixture(scope="module")
def cc() -> str:
    return c_compiler()


@pytest.fixture(scope="module")
def vector_add_build(tmp_path_factory, cc) -> Path:
    """examples/vector_add.py built for sm_80, sm_90a and the CPU."""
    out = tmp_path_factory.mktemp("vector_add")
    spec = f"{EXAMPLES / 'vector_add.py'}:vector_add"
    assert (
        main(
            [
                "compile",
                spec,
                "--arch",
                "sm_80",
                "--arch",
                "sm_90a",
                "--arch",
                "cpu",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def test_kernels_build(tmp_path_factory, cc) -> Path:
    """The kernels of `KERNELS` built for the CPU."""
    out = tmp_path_factory.mktemp("kernels")
    source = out / "aot_kernels.py"
    source.write_text(KERNELS)
    for kernel in ("stepped", "axpy"):
        assert main(["compile", f"{source}:{kernel}", "--arch", "cpu", "-o", str(out)]) == 0
    return out


VECTOR_ADD_MAIN = (
    """
long nx, ny;
float *x = read_file(argv[1], &nx), *y = read_file(argv[2], &ny);
int64_t n = ny / 4, x_shape[1] = {n}, y_shape[1] = {atoll(argv[4])}, out_shape[1] = {n};
float *out = aligned_alloc(64, (size_t)(n * 4 + 64));
int offset = atoi(argv[5]);  /* bytes to misalign x by */
int code = vector_add(NULL, (const char *)x + offset, x_shape, y, y_shape, out, out_shape);
"""
    + report("vector_add")
    + """
if (code == 0) write_file(argv[3], out, n * 4);
return 0;
"""
)


@pytest.fixture(scope="module")
def vector_add_cpu_program(vector_add_build, cc) -> Path:
    runner = write_runner(vector_add_build / "run_cpu.c", "vector_add.h", VECTOR_ADD_MAIN)
    library = vector_add_build / "libvector_add_cpu.so"
    return compile_c(
        vector_add_build / "run_cpu", [runner], [str(library), f"-Wl,-rpath,{vector_add_build}"]
    )


@pytest.fixture(scope="module")
def vector_add_gpu_program(vector_add_build, cc) -> Path:
    runner = write_runner(vector_add_build / "run_gpu.c", "vector_add.h", VECTOR_ADD_MAIN)
    launcher = vector_add_build / "vector_add.c"
    return compile_c(vector_add_build / "run_gpu", [runner, launcher], ["-ldl", "-lpthread"])


def vector_add_inputs(tmp_path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    y.tofile(tmp_path / "y.bin")
    return x, y


# --------------------------------------------------------------------------- the CPU library


@pytest.mark.parametrize("n", [1, 1000, 4096, 5000])
def test_a_c_program_runs_the_cpu_build_like_numpy(vector_add_cpu_program, tmp_path, n):
    x, y = vector_add_inputs(tmp_path, n)
    code, _, message = run_program(
        vector_add_cpu_program, tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "out.bin", n, 0
    )
    assert code == OK, message
    out = np.fromfile(tmp_path / "out.bin", np.float32)
    np.testing.assert_array_equal(
        out, (x.astype(np.float64) + y.astype(np.float64)).astype(np.float32)
    )


def test_a_wrong_shape_is_an_error_code_with_a_message_and_nothing_runs(
    vector_add_cpu_program, tmp_path
):
    vector_add_inputs(tmp_path, 100)
    code, description, message = run_program(
        vector_add_cpu_program, tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "out.bin", 99, 0
    )
    assert code == STATUS_CODES["ERROR_SHAPE"]
    assert "shape" in description
    assert message == (
        "vector_add(): parameter 'y': dimension 0 should be N = 100, got 99 (expected shape [N])"
    )
    assert not (tmp_path / "out.bin").exists()


def test_the_cpu_build_needs_no_alignment(vector_add_cpu_program, tmp_path):
    x, y = vector_add_inputs(tmp_path, 65)
    y[:64].tofile(tmp_path / "y.bin")  # N = 64; the program passes x + 4 bytes
    code, _, message = run_program(
        vector_add_cpu_program, tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "out.bin", 64, 4
    )
    assert code == OK, message
    out = np.fromfile(tmp_path / "out.bin", np.float32)
    np.testing.assert_array_equal(out, x[1:] + y[:64])


def test_scalars_and_f16_inputs_reach_the_cpu_build(test_kernels_build, tmp_path):
    body = (
        """
    long nx, ny;
    void *x = read_file(argv[1], &nx), *y = read_file(argv[2], &ny);
    int64_t n = nx / 2, shape[1] = {n};
    float *out = aligned_alloc(64, (size_t)(n * 4 + 64));
    int code = axpy(NULL, x, shape, y, shape, out, shape, (float)atof(argv[4]));
    """
        + report("axpy")
        + """
    if (code == 0) write_file(argv[3], out, n * 4);
    return 0;
    """
    )
    runner = write_runner(test_kernels_build / "run_axpy.c", "axpy.h", body)
    program = compile_c(
        test_kernels_build / "run_axpy",
        [runner],
        [str(test_kernels_build / "libaxpy_cpu.so"), f"-Wl,-rpath,{test_kernels_build}"],
    )
    rng = np.random.default_rng(1)
    n = 700
    x = rng.standard_normal(n).astype(np.float16)
    y = rng.standard_normal(n).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    y.tofile(tmp_path / "y.bin")
    code, _, message = run_program(
        program, tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "out.bin", -1.5
    )
    assert code == OK, message
    # Each f32 operation rounds once (no fused multiply-add): numpy's f32 ops do too.
    expected = x.astype(np.float32) * np.float32(-1.5) + y
    np.testing.assert_array_equal(np.fromfile(tmp_path / "out.bin", np.float32), expected)


def test_a_launch_check_that_fails_is_its_own_error_code(test_kernels_build, tmp_path):
    body = (
        """
    int32_t out[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    int64_t shape[1] = {8};
    int code = stepped(NULL, out, shape, atoi(argv[1]));
    """
        + report("stepped")
        + """
    fprintf(stderr, "%d", out[0]);
    return 0;
    """
    )
    runner = write_runner(test_kernels_build / "run_stepped.c", "stepped.h", body)
    program = compile_c(
        test_kernels_build / "run_stepped",
        [runner],
        [str(test_kernels_build / "libstepped_cpu.so"), f"-Wl,-rpath,{test_kernels_build}"],
    )
    code, _, message = run_program(program, 3)
    assert code == OK, message
    done = subprocess.run([str(program), "3"], capture_output=True, text=True)
    assert done.stderr == "3"  # range(0, 8, 3) has 3 iterations
    code, description, message = run_program(program, 0)
    assert code == STATUS_CODES["ERROR_LAUNCH_CHECK"]
    assert "the loop step is 0" in message
    assert "launch condition" in description
    code, _, message = run_program(program, 100)  # the kernel's assert, checked in C
    assert code == STATUS_CODES["ERROR_LAUNCH_CHECK"]
    assert "assert step < 100 does not hold for these arguments: steps are below 100" in message


@pytest.fixture(scope="module")
def flagged_programs(tmp_path_factory, cc) -> tuple[dict[str, Path], object]:
    """`FLAGGED` built for the CPU and sm_80, each linked into a C program that calls it
    with argv's n and flag on out = [-1, -1, -1, -1] and prints out after the status;
    and the Python kernel."""
    out = tmp_path_factory.mktemp("flagged")
    source = out / "aot_flagged.py"
    source.write_text(FLAGGED)
    archs = ["--arch", "cpu", "--arch", "sm_80"]
    assert main(["compile", f"{source}:flagged", *archs, "-o", str(out)]) == 0
    body = (
        """
    int32_t out[4] = {-1, -1, -1, -1};
    int64_t shape[1] = {4};
    int code = flagged(NULL, out, shape, atoi(argv[1]), (uint8_t)atoi(argv[2]));
    """
        + report("flagged")
        + """
    fprintf(stderr, "%d %d %d %d", out[0], out[1], out[2], out[3]);
    return 0;
    """
    )
    runner = write_runner(out / "run.c", "flagged.h", body)
    cpu = compile_c(
        out / "run_cpu", [runner], [str(out / "libflagged_cpu.so"), f"-Wl,-rpath,{out}"]
    )
    gpu = compile_c(out / "run_gpu", [runner, out / "flagged.c"], ["-ldl", "-lpthread"])
    return {"cpu": cpu, "gpu": gpu}, load_source(source).flagged


def load_source(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_error(kernel, *args) -> str:
    with pytest.raises(ValueError) as info:
        kernel(np.full(4, -1, np.int32), *args)
    return str(info.value)


def test_a_u1_scalar_other_than_0_or_1_is_refused_in_c_as_in_python(flagged_programs, tmp_path):
    programs, kernel = flagged_programs
    code, _, message = run_program(programs["cpu"], 3, 1)
    assert code == OK, message
    done = subprocess.run([str(programs["cpu"]), "3", "0"], capture_output=True, text=True)
    assert done.stderr == "9 9 9 -1"
    # no driver: the checks come first
    env = {"TILELANG_LIBCUDA": str(tmp_path / "no-such-libcuda.so.1")}
    for program, environment in ((programs["cpu"], None), (programs["gpu"], env)):
        for flag in (2, 255):
            code, description, message = run_program(program, 3, flag, env=environment)
            assert code == STATUS_CODES["ERROR_SCALAR"]
            assert description == "a scalar argument is outside its dtype's range"
            assert message == python_error(kernel, 3, flag)
            assert message == f"flagged(): parameter 'flag' expects a u1 in [0, 1], got {flag}"
    np.testing.assert_array_equal(kernel(np.full(4, -1, np.int32), 3, True), [5, 5, 5, -1])


def test_a_negative_grid_is_an_error_in_c_and_an_empty_one_is_not(flagged_programs, tmp_path):
    programs, kernel = flagged_programs
    env = {"TILELANG_LIBCUDA": str(tmp_path / "no-such-libcuda.so.1")}
    # The build names the source by its file name (it ran outside the source's folder).
    folder = f"{Path(kernel.fn.__code__.co_filename).parent}/"
    for program, environment in ((programs["cpu"], None), (programs["gpu"], env)):
        code, _, message = run_program(program, -2, 1, env=environment)
        assert code == STATUS_CODES["ERROR_LAUNCH_CHECK"]
        assert message == python_error(kernel, -2, 1).replace(folder, "")
        line = next(i for i, text in enumerate(FLAGGED.splitlines(), 1) if "tl.blocks(" in text)
        assert message.endswith(
            f"aot_flagged.py:{line}: the grid is negative (-2 blocks in dimension 0)"
        )
        assert message.startswith("flagged() at ")
    code, _, message = run_program(programs["cpu"], 0, 1)
    assert code == OK, message
    done = subprocess.run([str(programs["cpu"]), "0", "1"], capture_output=True, text=True)
    assert done.stderr == "-1 -1 -1 -1"  # nothing ran
    code, _, _ = run_program(programs["gpu"], 0, 1, env=env)
    assert code == OK  # an empty launch needs no driver


@pytest.fixture(scope="module")
def quant_matmul_build(tmp_path_factory, cc) -> Path:
    """examples/quant_matmul.py (u4 weights, groups of 128) for sm_80, sm_90a and the CPU."""
    out = tmp_path_factory.mktemp("quant_matmul")
    spec = f"{EXAMPLES / 'quant_matmul.py'}:quant_matmul"
    archs = ["--arch", "sm_80", "--arch", "sm_90a", "--arch", "cpu"]
    assert main(["compile", spec, "-D", "WT=u4", "-D", "G=128", *archs, "-o", str(out)]) == 0
    return out


def quant_files(folder) -> tuple[Path, ...]:
    """The files a quant_matmul C program reads (x, w, s) and writes (y), in `folder`."""
    return tuple(folder / f"{name}.bin" for name in ("x", "w", "s", "y"))


def quant_matmul_inputs(qm, m: int, k: int, n: int, folder):
    """u4 inputs of examples/quant_matmul.py (groups of 128) for an m x k x n product,
    written to `folder`: (x, packed weights, scales, the C lines that read them and
    declare the four shapes)."""
    x, w, s = qm.make_inputs(m, k, n, tl.u4, 128)
    packed = qm.pack_weights(w)
    for array, path in zip((x, packed.data, s), quant_files(folder)[:3], strict=True):
        array.tofile(path)
    reads = f"""
    long nx, nw, ns;
    void *x = read_file(argv[1], &nx), *w = read_file(argv[2], &nw), *s = read_file(argv[3], &ns);
    int64_t x_shape[2] = {{{m}, {k}}}, w_shape[2] = {{{packed.shape[0]}, {packed.shape[1]}}};
    int64_t s_shape[2] = {{{s.shape[0]}, {n}}}, y_shape[2] = {{{m}, {n}}};"""
    return x, packed, s, reads


def test_a_u4_dequant_matmul_runs_from_c_like_numpy_and_like_the_jit(quant_matmul_build, tmp_path):
    qm = load_example("quant_matmul")
    out = quant_matmul_build
    m, k, n = 16, 256, 256
    x, packed, s, reads = quant_matmul_inputs(qm, m, k, n, tmp_path)
    body = (
        reads
        + f"""
    uint16_t *y = aligned_alloc(64, {m * n * 2});
    int code = quant_matmul(NULL, x, x_shape, w, w_shape, s, s_shape, y, y_shape);
    """
        + report("quant_matmul")
        + f"""
    if (code == 0) write_file(argv[4], y, {m * n * 2});
    return 0;
    """
    )
    runner = write_runner(out / "run.c", "quant_matmul.h", body)
    program = compile_c(
        out / "run", [runner], [str(out / "libquant_matmul_cpu.so"), f"-Wl,-rpath,{out}"]
    )
    code, _, message = run_program(program, *quant_files(tmp_path))
    assert code == OK, message
    y = np.fromfile(tmp_path / "y.bin", np.float16).reshape(m, n)
    expected = qm.reference(x, packed, s, 128).astype(np.float32)
    error = float(np.abs(y.astype(np.float32) - expected).max()) / float(np.abs(expected).max())
    assert error <= qm.tolerance(k)
    jit = qm.quant_matmul(x, packed, s, np.zeros((m, n), np.float16), WT=tl.u4, G=128)
    np.testing.assert_array_equal(y.view(np.uint16), jit.view(np.uint16))  # the same program


def test_softmax_from_c_calls_the_math_library_and_matches_numpy(tmp_path, cc):
    """Row softmax (warp reductions, exp from libm) through the CPU library."""
    sm = load_example("softmax")
    out = tmp_path / "build"
    m, n = 37, 300
    # The facts a call at 37 x 300 derives (M % 1, N % 4), so the library is the program
    # the call runs: a float sum's order follows its layout, which the facts choose.
    source = f"{EXAMPLES / 'softmax.py'}:softmax"
    command = ["compile", source, "--arch", "cpu", "--assume", "M=1,N=4", "-o", str(out)]
    assert main(command) == 0
    x = np.random.default_rng(0).standard_normal((m, n), dtype=np.float32) * 4
    x.tofile(tmp_path / "x.bin")
    body = (
        f"""
    long nx;
    float *x = read_file(argv[1], &nx);
    float *y = aligned_alloc(64, {m * n * 4});
    int64_t shape[2] = {{{m}, {n}}};
    int code = softmax(NULL, x, shape, y, shape);
    """
        + report("softmax")
        + f"""
    if (code == 0) write_file(argv[2], y, {m * n * 4});
    return 0;
    """
    )
    runner = write_runner(out / "run.c", "softmax.h", body)
    program = compile_c(
        out / "run", [runner], [str(out / "libsoftmax_cpu.so"), f"-Wl,-rpath,{out}"]
    )
    code, _, message = run_program(program, tmp_path / "x.bin", tmp_path / "y.bin")
    assert code == OK, message
    y = np.fromfile(tmp_path / "y.bin", np.float32).reshape(m, n)
    assert np.abs(y - sm.reference(x)).max() < 1e-6
    np.testing.assert_array_equal(y, sm.softmax(x, np.empty_like(x)))  # the same program


# --------------------------------------------------------------------------- the GPU launcher

STUB_LIBCUDA = r"""
typedef int CUresult;
CUresult cuInit(unsigned int flags) { (void)flags; return 100; }
CUresult cuGetErrorName(CUresult r, const char **s) { (void)r; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
CUresult cuGetErrorString(CUresult r, const char **s) { (void)r; *s = "no CUDA-capable device is detected"; return 0; }
#define STUB(name) CUresult name(void) { return 999; }
STUB(cuCtxGetCurrent) STUB(cuCtxSetCurrent) STUB(cuCtxGetDevice) STUB(cuDeviceGet)
STUB(cuDevicePrimaryCtxRetain) STUB(cuDeviceGetAttribute) STUB(cuModuleLoadData)
STUB(cuModuleGetFunction) STUB(cuFuncSetAttribute) STUB(cuLaunchKernel)
"""


@pytest.mark.parametrize("build", ["vector_add", "quant_matmul"])
def test_the_gpu_launcher_compiles_with_no_cuda_header(build, request, cc):
    folder = request.getfixturevalue(f"{build}_build")
    done = subprocess.run(
        [
            cc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-c",
            "-o",
            os.devnull,
            str(folder / f"{build}.c"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "#include <cuda" not in (folder / f"{build}.c").read_text()


def test_without_a_driver_the_gpu_launcher_says_so(vector_add_gpu_program, tmp_path):
    vector_add_inputs(tmp_path, 256)
    args = (tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "out.bin", 256, 0)
    missing = tmp_path / "no-such-libcuda.so.1"
    code, description, message = run_program(
        vector_add_gpu_program, *args, env={"TILELANG_LIBCUDA": str(missing)}
    )
    assert code == STATUS_CODES["ERROR_DRIVER_NOT_FOUND"]
    assert "libcuda" in description
    assert str(missing) in message
    code, _, message = run_program(vector_add_gpu_program, *args)  # the real libcuda.so.1, if any
    assert code in (STATUS_CODES["ERROR_DRIVER_NOT_FOUND"], STATUS_CODES["ERROR_NO_DEVICE"], OK), (
        message
    )


def test_with_a_driver_but_no_gpu_the_launcher_says_no_device(vector_add_gpu_program, tmp_path, cc):
    stub_source = tmp_path / "stub.c"
    stub_source.write_text(STUB_LIBCUDA)
    stub = tmp_path / "libcuda.so.1"
    done = subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(stub), str(stub_source)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    vector_add_inputs(tmp_path, 256)
    args = (tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "out.bin", 256, 0)
    code, description, message = run_program(
        vector_add_gpu_program, *args, env={"TILELANG_LIBCUDA": str(stub)}
    )
    assert code == STATUS_CODES["ERROR_NO_DEVICE"]
    assert description == "no CUDA device is available"
    assert "CUDA_ERROR_NO_DEVICE" in message


def test_the_gpu_launcher_checks_arguments_before_the_driver(vector_add_gpu_program, tmp_path):
    vector_add_inputs(tmp_path, 256)
    files = (tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "out.bin")
    env = {"TILELANG_LIBCUDA": str(tmp_path / "no-such-libcuda.so.1")}
    code, _, message = run_program(vector_add_gpu_program, *files, 255, 0, env=env)
    assert code == STATUS_CODES["ERROR_SHAPE"], message
    np.zeros(257, np.float32).tofile(tmp_path / "x.bin")
    code, _, message = run_program(vector_add_gpu_program, *files, 256, 4, env=env)
    assert code == STATUS_CODES["ERROR_ALIGNMENT"]
    assert "vector_add(): parameter 'x' must start on a 16-byte boundary" in message


# --------------------------------------------------------------------------- PTX and the manifest


def test_the_ptx_declares_the_default_isa_driver_580_loads(vector_add_build):
    for arch in ("sm_80", "sm_90a"):
        ptx = (vector_add_build / f"vector_add.{arch}.ptx").read_text()
        assert ptx_isa(ptx) == (9, 0)
        assert f".target {arch}" in ptx
    launcher = (vector_add_build / "vector_add.c").read_text()
    # Both cubins, and the sm_80 PTX for newer GPUs (sm_90a PTX runs only on sm_90a).
    assert launcher.count("static const unsigned char tl_image_") == 3


def test_ptx_isa_is_honoured_and_checked(tmp_path):
    spec = f"{EXAMPLES / 'vector_add.py'}:vector_add"
    assert main(["compile", spec, "--arch", "sm_90a", "--ptx-isa", "8.0", "-o", str(tmp_path)]) == 0
    assert ptx_isa((tmp_path / "vector_add.sm_90a.ptx").read_text()) == (8, 0)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kernels"][0]["archs"]["sm_90a"]["ptx_isa"] == "8.0"
    assert manifest["ptx_loads_on"] == "drivers of CUDA 12.0 and later"


def test_retargeting_refuses_ptx_newer_than_the_isa_asked_for():
    ptx = ".version 9.5\n.target sm_90a\n.address_size 64\n"
    assert ptx_isa(retarget_ptx(ptx, (9, 0), "k")) == (9, 0)
    assert retarget_ptx(ptx, (9, 5), "k") == ptx
    with pytest.raises(AotError, match=r"needs ISA 8\.0 \(\.target sm_90a\).*--ptx-isa 7\.8"):
        retarget_ptx(ptx, (7, 8), "k")
    vector = (
        ".version 9.5\n.target sm_90\n\t@%p1 red.global.add.v4.f32 [%rd1], {%f1, %f2, %f3, %f4};\n"
    )
    assert required_isa(vector) == ((8, 1), "vector red (red.global.v*)")
    with pytest.raises(AotError, match=r"needs ISA 8\.1 .*CUDA 12\.0"):
        retarget_ptx(vector, (8, 0), "k")


@pytest.mark.parametrize("text", ["9", "nine", "1.9", "9.0.1"])
def test_a_bad_ptx_isa_names_the_option(text):
    with pytest.raises(AotError, match="--ptx-isa"):
        parse_isa(text)


def test_the_manifest_describes_every_file_with_its_hash(vector_add_build):
    manifest = json.loads((vector_add_build / "manifest.json").read_text())
    assert manifest["tilelang_version"] == tl.__version__
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((vector_add_build / name).read_bytes()).hexdigest() == digest
    assert {
        "vector_add.h",
        "vector_add.c",
        "libvector_add_cpu.so",
        "vector_add.sm_80.cubin",
    } <= set(manifest["files"])
    (kernel,) = manifest["kernels"]
    assert kernel["constexprs"] == {"BLOCK": 1024}
    assert [p["name"] for p in kernel["signature"]] == ["x", "y", "out"]
    assert kernel["signature"][2]["written"] and not kernel["signature"][0]["written"]
    assert kernel["size_rules"] == {
        "read": {"N": "x.shape[0]"},
        "checked": ["y.shape[0] == N", "out.shape[0] == N"],
    }
    for arch in ("sm_80", "sm_90a"):
        resources = kernel["archs"][arch]
        assert resources["registers"] > 0 and resources["spill_store_bytes"] == 0
        assert resources["threads"] == 128
    assert kernel["archs"]["cpu"]["library"] == "libvector_add_cpu.so"


# --------------------------------------------------------------------------- bundles


def test_a_bundle_dispatches_to_the_build_whose_size_facts_hold(tmp_path, cc):
    spec = f"{EXAMPLES / 'vector_add.py'}:vector_add"
    args = ["compile", spec, spec, "--name", "va_any", "--name", "va_128"]
    args += [
        "--assume",
        "none",
        "--assume",
        "N=128",
        "--arch",
        "cpu",
        "--bundle",
        "va",
        "-o",
        str(tmp_path),
    ]
    assert main(args) == 0
    body = (
        """
    float x[256], y[256], out[256];
    int64_t n = atoll(argv[1]), shape[1] = {n};
    for (int i = 0; i < 256; ++i) { x[i] = (float)i; y[i] = 0.5f; out[i] = 0; }
    int code = va(NULL, x, shape, y, shape, out, shape);
    """
        + report("va")
        + """
    fprintf(stderr, "%g", (double)out[n - 1]);
    return 0;
    """
    )
    runner = write_runner(tmp_path / "run.c", "va.h", body)
    libraries = [str(tmp_path / f"lib{n}_cpu.so") for n in ("va_any", "va_128")]
    program = compile_c(
        tmp_path / "run", [runner, tmp_path / "va.c"], [*libraries, f"-Wl,-rpath,{tmp_path}"]
    )
    for n in (256, 200):  # 256: the N % 128 build; 200: the build without facts
        code, _, message = run_program(program, n)
        assert code == OK, message
        done = subprocess.run([str(program), str(n)], capture_output=True, text=True)
        assert float(done.stderr) == n - 1 + 0.5
    # A build alone refuses sizes its facts exclude, with its own code.
    single = write_runner(
        tmp_path / "single.c",
        "va_128.h",
        body.replace("va(", "va_128(").replace(report("va"), report("va_128")),
    )
    program = compile_c(tmp_path / "single", [single], [libraries[1], f"-Wl,-rpath,{tmp_path}"])
    code, _, message = run_program(program, 200)
    assert code == STATUS_CODES["ERROR_SIZE_FACT"]
    assert "size N = 200 is not a multiple of 128" in message


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["examples/vector_add.py"], "expected FILE:KERNEL"),
        (["no/such/file.py:k"], "no such file"),
        ([f"{EXAMPLES / 'vector_add.py'}:nope"], "has no kernel 'nope'"),
        ([f"{EXAMPLES / 'vector_add.py'}:vector_add", "-D", "BLOCK"], "-D expects NAME=VALUE"),
        (
            [f"{EXAMPLES / 'vector_add.py'}:vector_add", "-D", "TILE=3"],
            "TILE is not a tl.constexpr",
        ),
        (
            [f"{EXAMPLES / 'vector_add.py'}:vector_add", "--arch", "sm_99"],
            "--arch: expected one of",
        ),
        ([f"{EXAMPLES / 'vector_add.py'}:vector_add", "--ptx-isa", "9"], "--ptx-isa"),
        ([f"{EXAMPLES / 'vector_add.py'}:vector_add", "--assume", "N=x"], "--assume"),
        ([f"{EXAMPLES / 'vector_add.py'}:vector_add", "--name", "1bad"], "not a C identifier"),
    ],
)
def test_bad_command_lines_are_errors_that_name_what_is_wrong(argv, expected, tmp_path, capsys):
    arch = [] if "--arch" in argv else ["--arch", "cpu"]
    assert main(["compile", *argv, *arch, "-o", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tilelang compile: error:")
    assert expected in error
    assert not (tmp_path / "out").exists()  # nothing is written before everything compiled


# --------------------------------------------------------------------------- on a GPU

#: Device memory for the GPU test program, through the driver it loads itself.
C_DEVICE = r"""
#include <dlfcn.h>
typedef unsigned long long dptr;
static struct {
  int (*cuInit)(unsigned);
  int (*cuDeviceGet)(int *, int);
  int (*cuDevicePrimaryCtxRetain)(void **, int);
  int (*cuCtxSetCurrent)(void *);
  int (*cuMemAlloc_v2)(dptr *, size_t);
  int (*cuMemcpyHtoD_v2)(dptr, const void *, size_t);
  int (*cuMemcpyDtoH_v2)(void *, dptr, size_t);
  int (*cuCtxSynchronize)(void);
} cu;
#define LOAD(f) *(void **)(&cu.f) = dlsym(lib, #f); if (!cu.f) { fprintf(stderr, "no " #f); exit(3); }
#define CHECK(call) do { int r = (call); if (r) { fprintf(stderr, #call ": %d", r); exit(3); } } while (0)
static inline void setup(void) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW);
  void *context;
  int device;
  if (!lib) { fprintf(stderr, "no libcuda.so.1"); exit(3); }
  LOAD(cuInit) LOAD(cuDeviceGet) LOAD(cuDevicePrimaryCtxRetain) LOAD(cuCtxSetCurrent)
  LOAD(cuMemAlloc_v2) LOAD(cuMemcpyHtoD_v2) LOAD(cuMemcpyDtoH_v2) LOAD(cuCtxSynchronize)
  CHECK(cu.cuInit(0));
  CHECK(cu.cuDeviceGet(&device, 0));
  CHECK(cu.cuDevicePrimaryCtxRetain(&context, device));
  CHECK(cu.cuCtxSetCurrent(context));
}
static inline void *to_device(const void *host, long size) {
  dptr p;
  CHECK(cu.cuMemAlloc_v2(&p, (size_t)size + 1));
  CHECK(cu.cuMemcpyHtoD_v2(p, host, (size_t)size));
  return (void *)(uintptr_t)p;
}
"""


def gpu_available() -> bool:
    from tilelang.runtime import gpu

    return gpu.gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA device")
def test_the_c_launcher_runs_the_cubin_like_the_cpu_backend(quant_matmul_build, tmp_path):
    qm = load_example("quant_matmul")
    out = quant_matmul_build
    m, k, n = 16, 512, 192
    x, packed, s, reads = quant_matmul_inputs(qm, m, k, n, tmp_path)
    body = (
        reads
        + f"""
    uint16_t y[{m * n}] = {{0}};
    setup();
    void *y_device = to_device(y, sizeof y);
    int code = quant_matmul(NULL, to_device(x, nx), x_shape, to_device(w, nw), w_shape,
                            to_device(s, ns), s_shape, y_device, y_shape);
    """
        + report("quant_matmul")
        + """
    CHECK(cu.cuCtxSynchronize());
    CHECK(cu.cuMemcpyDtoH_v2(y, (dptr)(uintptr_t)y_device, sizeof y));
    if (code == 0) write_file(argv[4], y, sizeof y);
    return 0;
    """
    )
    runner = write_runner(tmp_path / "run.c", "quant_matmul.h", body, prelude=C_DEVICE)
    program = compile_c(
        tmp_path / "run", [runner, out / "quant_matmul.c"], ["-I", str(out), "-ldl", "-lpthread"]
    )
    code, _, message = run_program(program, *quant_files(tmp_path))
    assert code == OK, message
    y_gpu = np.fromfile(tmp_path / "y.bin", np.float16).reshape(m, n).astype(np.float32)
    y_cpu = qm.quant_matmul(x, packed, s, np.zeros((m, n), np.float16), WT=tl.u4, G=128)
    scale = np.abs(y_cpu.astype(np.float32)).max()
    assert np.abs(y_gpu - y_cpu.astype(np.float32)).max() <= qm.tolerance(k) * scale


# --------------------------------------------------------------------------- host expressions in C


def _edge_values(dtype: tl.DType) -> list[int]:
    values = {dtype.min, dtype.min + 1, -1, 0, 1, 2, 3, 7, 31, 32, 33, dtype.max - 1, dtype.max}
    return sorted(v for v in values if dtype.min <= v <= dtype.max)


def _host_expressions(dtype: tl.DType) -> list:
    from tilelang.ir import thread as t

    a, b = t.Name("a", dtype), t.Name("b", dtype)
    binary = ["add", "sub", "mul", "div", "rem", "shl", "shr", "and", "or", "xor", "min", "max"]
    binary += ["eq", "ne", "lt", "le", "gt", "ge"]
    exprs = [t.Binary(op, a, b) for op in binary]
    exprs += [t.Unary(op, a) for op in ("neg", "not", "abs")]
    exprs += [t.Cvt(a, to) for to in (tl.i8, tl.u8, tl.u1, tl.i64, tl.u32)]
    exprs.append(t.Select(t.Binary("lt", a, b), t.Binary("sub", b, a), t.Imm(5, dtype)))
    exprs.append(t.Binary("shl", a, t.Cvt(b, tl.i8)))  # an amount of another dtype
    return exprs


def test_grid_and_check_expressions_in_c_agree_with_the_host_evaluator(tmp_path, cc):
    """Every operator the host evaluates, at the edges of every integer dtype a launch
    uses: the C the launchers are generated with gives `eval_host_expr`'s values."""
    from tilelang.aot.c_expr import C_HELPERS, thread_expr_c
    from tilelang.runtime.host_expr import eval_host_expr

    cases, expected = [], []
    for dtype in (tl.i32, tl.u32, tl.i8, tl.u8, tl.i16, tl.i64):
        values = _edge_values(dtype)
        for k, expr in enumerate(_host_expressions(dtype)):
            text = thread_expr_c(expr, {"a": "va", "b": "vb"}, f"case {k}")
            listed = ", ".join(f"INT64_C({v})" if v > -(2**63) else "INT64_MIN" for v in values)
            cases.append(
                f"  {{ const int64_t vs[] = {{{listed}}};\n"
                f"    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; ++i)\n"
                f"      for (size_t j = 0; j < sizeof vs / sizeof vs[0]; ++j) {{\n"
                f"        int64_t va = vs[i], vb = vs[j];\n        (void)vb;\n"
                f'        printf("%lld\\n", (long long)({text}));\n'
                f"      }} }}\n"
            )
            for x in values:
                for y in values:
                    expected.append(int(eval_host_expr(expr, {"a": x, "b": y})))
    source = tmp_path / "exprs.c"
    source.write_text(
        "#include <stdint.h>\n#include <stdio.h>\n#include <stddef.h>\n"
        + C_HELPERS
        + "int main(void) {\n"
        + "".join(cases)
        + "  return 0;\n}\n"
    )
    program = compile_c(tmp_path / "exprs", [source])
    done = subprocess.run([str(program)], capture_output=True, text=True, check=True)
    found = [int(line) for line in done.stdout.split()]
    assert len(found) == len(expected)
    mismatches = [(i, f, e) for i, (f, e) in enumerate(zip(found, expected, strict=True)) if f != e]
    assert not mismatches, mismatches[:10]


# --------------------------------------------------------------------------- value facts


@pytest.fixture(scope="module")
def value_fact_build(tmp_path_factory, cc) -> Path:
    """axpy built for the CPU under the size fact N % 128 and the value fact 0 <= x < 64."""
    out = tmp_path_factory.mktemp("values")
    source = out / "aot_kernels.py"
    source.write_text(KERNELS)
    args = ["compile", f"{source}:axpy", "--arch", "cpu", "-o", str(out), "--assume", "N=128,x<64"]
    assert main(args) == 0
    return out


def test_a_value_fact_is_in_the_manifest_apart_from_the_size_facts(value_fact_build):
    (entry,) = json.loads((value_fact_build / "manifest.json").read_text())["kernels"]
    assert entry["assume"] == {"N": 128}
    assert entry["values"] == {"x": 64}


def test_the_header_says_the_cpu_library_checks_value_facts_and_the_gpu_launcher_does_not(
    value_fact_build,
):
    header = " ".join((value_fact_build / "axpy.h").read_text().replace("*", " ").split())
    assert "Values the build assumes: 0 <= x < 64 (sign bit clear)" in header
    assert "The CPU library checks them" in header
    assert "the GPU launcher does NOT" in header


@pytest.mark.parametrize(
    ("bad", "code"), [(None, "OK"), (64.0, "ERROR_VALUE_FACT"), (-0.0, "ERROR_VALUE_FACT"),
                      (np.nan, "ERROR_VALUE_FACT"), (63.96875, "OK")],
)  # fmt: skip
def test_the_cpu_library_checks_value_facts_on_the_arrays_before_running(
    value_fact_build, tmp_path, bad, code
):
    body = (
        """
    long nx, ny;
    void *x = read_file(argv[1], &nx), *y = read_file(argv[2], &ny);
    int64_t n = nx / 2, shape[1] = {n};
    float *out = aligned_alloc(64, (size_t)(n * 4 + 64));
    for (int64_t i = 0; i < n; ++i) out[i] = -7.0f;
    int code = axpy(NULL, x, shape, y, shape, out, shape, 2.0f);
    """
        + report("axpy")
        + """
    write_file(argv[3], out, n * 4);
    return 0;
    """
    )
    runner = write_runner(tmp_path / "run.c", "axpy.h", body)
    program = compile_c(
        tmp_path / "run",
        [runner],
        [str(value_fact_build / "libaxpy_cpu.so"), f"-Wl,-rpath,{value_fact_build}",
         "-I", str(value_fact_build)],
    )  # fmt: skip
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 64, 256).astype(np.float16)
    x[x >= 64] = 0
    if bad is not None:
        x[37] = bad
    y = rng.standard_normal(256).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    y.tofile(tmp_path / "y.bin")
    status, _, message = run_program(
        program, tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "o"
    )
    out = np.fromfile(tmp_path / "o", np.float32)
    assert status == STATUS_CODES[code], message
    if code == "OK":
        np.testing.assert_array_equal(out, x.astype(np.float32) * np.float32(2.0) + y)
    else:
        assert "assumes 0 <= x < 64" in message and "element 37 of x" in message
        assert (out == -7.0).all()  # nothing ran


def test_value_fact_thresholds_are_the_first_code_outside_the_fact():
    from tilelang.aot.c_launcher import value_threshold

    assert value_threshold(tl.f16, 64) == int(np.float16(64).view(np.uint16))
    assert value_threshold(tl.f32, 2) == int(np.float32(2).view(np.uint32))
    assert value_threshold(tl.e8m0, 2) == 128  # 2^(128 - 127) = 2
    assert value_threshold(tl.i8, 16) == 16 and value_threshold(tl.i8, 1024) == 128
    assert value_threshold(tl.u8, 1024) == 256
    assert value_threshold(tl.f8e4m3, 512) == 0x7F  # every finite positive code; 0x7F is NaN


def test_a_value_fact_on_a_tensor_the_launcher_cannot_read_is_refused(tmp_path, capsys):
    source = tmp_path / "k.py"
    source.write_text(
        textwrap.dedent(
            """
            import tilelang as tl

            @tl.kernel(warps=1)
            def codes(q: tl.Tensor[tl.u4, "N"], out: tl.Tensor[tl.f16, "N"]):
                tl.store(out, [0], tl.load(q, [0], [128]).to(tl.f16))
            """
        )
    )
    args = ["compile", f"{source}:codes", "--arch", "cpu", "-o", str(tmp_path), "--assume", "q<8"]
    assert main(args) != 0
    assert "value fact on 'q' needs 8, 16 or 32-bit elements" in capsys.readouterr().err
