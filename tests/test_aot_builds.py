"""What a serving engineer meets building kernels ahead of time: value facts that leave
the size facts alone, a bundle that moves on when a value fact fails, a folder that
collects several builds in one manifest, files that name no path of the machine that
built them, an sm_80 image that does not fit an sm_86's shared memory, the CLI's
messages and warnings said once."""

import hashlib
import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES
from test_aot import KERNELS, STATUS_CODES, compile_c, report, run_program, write_runner

from tilelang.aot import AotWarning, KernelSpec, compile_aot
from tilelang.cli import load_kernel, main

OK = STATUS_CODES["OK"]


@pytest.fixture
def kernels_file(tmp_path) -> Path:
    source = tmp_path / "aot_kernels.py"
    source.write_text(KERNELS)
    return source


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def header_facts(folder: Path, name: str) -> str:
    text = " ".join((folder / f"{name}.h").read_text().replace("*", " ").split())
    return text.split("Sizes the build assumes: ")[1].split(".")[0]


# --------------------------------------------------------------------------- value facts


@pytest.mark.parametrize(
    ("assume", "sizes"),
    [("x<64", {}), ("none,x<64", {}), ("all,x<64", {"N": 128}), ("N=16,x<64", {"N": 16})],
)
def test_a_value_fact_leaves_the_size_facts_as_they_were(kernels_file, tmp_path, assume, sizes):
    out = tmp_path / "out"
    args = ["compile", f"{kernels_file}:axpy", "--arch", "cpu", "-o", str(out)]
    assert main([*args, "--assume", assume]) == 0
    (entry,) = manifest(out)["kernels"]
    assert entry["assume"] == sizes and entry["values"] == {"x": 64}
    stated = ", ".join(f"{s} % {d} == 0" for s, d in sizes.items()) or "none"
    assert header_facts(out, "axpy") == stated


def test_the_python_api_states_no_size_fact_with_value_facts_alone(kernels_file, tmp_path):
    axpy = load_kernel(f"{kernels_file}:axpy")
    built = compile_aot([KernelSpec(axpy, "axpy", assume={"x": 64})], ["cpu"], tmp_path)
    assert built["kernels"][0]["assume"] == {} and built["kernels"][0]["values"] == {"x": 64}


def axpy_program(folder: Path, name: str, libraries: list[str]) -> Path:
    """A C program: axpy-like `name` on x.bin (f16) and y.bin (f32), out to argv[3]."""
    body = (
        f"""
    long nx, ny;
    void *x = read_file(argv[1], &nx), *y = read_file(argv[2], &ny);
    int64_t n = nx / 2, shape[1] = {{n}};
    float *out = aligned_alloc(64, (size_t)(n * 4 + 64));
    int code = {name}(NULL, x, shape, y, shape, out, shape, 2.0f);
    """
        + report(name)
        + """
    write_file(argv[3], out, n * 4);
    return 0;
    """
    )
    runner = write_runner(folder / f"run_{name}.c", f"{name}.h", body)
    paths = [str(folder / f"lib{lib}_cpu.so") for lib in libraries]
    sources = [runner] + ([folder / f"{name}.c"] if name not in libraries else [])
    return compile_c(folder / f"run_{name}", sources, [*paths, f"-Wl,-rpath,{folder}"])


def test_a_bundle_moves_on_when_a_value_fact_does_not_hold(kernels_file, tmp_path):
    spec = f"{kernels_file}:axpy"
    args = ["compile", spec, spec, "--name", "fast", "--name", "any", "--bundle", "pick"]
    args += ["--assume", "N=128,x<64", "--assume", "none", "--arch", "cpu", "-o", str(tmp_path)]
    assert main(args) == 0
    assert manifest(tmp_path)["bundles"] == {"pick": ["fast", "any"]}
    program = axpy_program(tmp_path, "pick", ["fast", "any"])
    y = np.linspace(-1, 1, 256).astype(np.float32)
    y.tofile(tmp_path / "y.bin")
    for largest in (60.0, 100.0):  # 100 breaks the fast build's 0 <= x < 64
        x = np.linspace(0, largest, 256).astype(np.float16)
        x.tofile(tmp_path / "x.bin")
        code, _, message = run_program(
            program, tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "o"
        )
        assert code == OK, message
        expected = x.astype(np.float32) * np.float32(2) + y
        np.testing.assert_array_equal(np.fromfile(tmp_path / "o", np.float32), expected)
    alone = axpy_program(tmp_path, "fast", ["fast"])  # the fast build alone refuses it
    code, _, message = run_program(alone, tmp_path / "x.bin", tmp_path / "y.bin", tmp_path / "o")
    assert code == STATUS_CODES["ERROR_VALUE_FACT"] and "assumes 0 <= x < 64" in message


# --------------------------------------------------------------------------- one folder, several builds


def test_a_second_build_into_a_folder_adds_to_its_manifest(kernels_file, tmp_path, capsys):
    out = tmp_path / "out"
    cpu = ["--arch", "cpu", "-o", str(out)]
    assert main(["compile", f"{kernels_file}:axpy", "--name", "ax_cpu", *cpu]) == 0
    assert main(["compile", f"{kernels_file}:stepped", *cpu]) == 0
    listed = manifest(out)
    assert [e["name"] for e in listed["kernels"]] == ["ax_cpu", "stepped"]
    for name in ("ax_cpu.h", "libax_cpu_cpu.so", "stepped.h", "libstepped_cpu.so"):
        assert name in listed["files"]
    # Built again, a kernel replaces its own entry (here: with a size fact), in its place.
    args = ["compile", f"{kernels_file}:axpy", "--name", "ax_cpu", "--assume", "N=64", *cpu]
    assert main(args) == 0
    listed = manifest(out)
    assert [e["name"] for e in listed["kernels"]] == ["ax_cpu", "stepped"]
    assert listed["kernels"][0]["assume"] == {"N": 64}
    for name, digest in listed["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    assert "manifest.json lists 2 kernels" in capsys.readouterr().out


def test_a_folder_whose_manifest_cannot_be_merged_is_refused_before_anything_is_written(
    kernels_file, tmp_path, capsys
):
    out = tmp_path / "out"
    assert main(["compile", f"{kernels_file}:axpy", "--arch", "cpu", "-o", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # A name that is a kernel there cannot become a bundle here.
    spec = f"{kernels_file}:stepped"
    args = ["compile", spec, "--bundle", "axpy", "--arch", "cpu", "-o", str(out)]
    assert main(args) == 1
    assert "--bundle axpy:" in capsys.readouterr().err
    (out / "manifest.json").write_text("{not json")
    assert main(["compile", spec, "--arch", "cpu", "-o", str(out)]) == 1
    assert "is not a manifest tilelang compile writes" in capsys.readouterr().err
    before["manifest.json"] = b"{not json"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_gpu_builds_of_another_ptx_isa_are_not_merged(tmp_path, capsys):
    spec = f"{EXAMPLES / 'vector_add.py'}:vector_add"
    assert main(["compile", spec, "--arch", "sm_80", "-o", str(tmp_path)]) == 0
    args = ["compile", spec, "--name", "va2", "--arch", "sm_80", "--ptx-isa", "8.0"]
    assert main([*args, "-o", str(tmp_path)]) == 1
    assert "ptx_isa 9.0, this build has 8.0" in capsys.readouterr().err
    assert not (tmp_path / "va2.h").exists()


# --------------------------------------------------------------------------- portable files


def test_two_checkouts_build_the_same_bytes(kernels_file, tmp_path, monkeypatch):
    folders = []
    for checkout in ("one", "two"):
        root = tmp_path / checkout
        (root / "kernels").mkdir(parents=True)
        (root / "kernels" / "k.py").write_text(KERNELS)
        monkeypatch.chdir(root)
        args = ["compile", "kernels/k.py:stepped", "--arch", "cpu", "--arch", "sm_80"]
        assert main([*args, "-o", "out"]) == 0
        folders.append(root / "out")
    names = sorted(p.name for p in folders[0].iterdir())
    assert names == sorted(p.name for p in folders[1].iterdir())
    for name in names:
        data = (folders[0] / name).read_bytes()
        assert data == (folders[1] / name).read_bytes(), name
        assert str(tmp_path).encode() not in data, name
    # The launch check's message names the source as the build found it.
    assert "kernels/k.py:" in manifest(folders[0])["kernels"][0]["launch_checks"][0]


# --------------------------------------------------------------------------- shared memory per GPU

GEMM = """import tilelang as tl


@tl.kernel(warps=8)
def gemm(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f16, "M", "N"],
    BM: tl.constexpr = 128,
    BN: tl.constexpr = 128,
    BK: tl.constexpr = 64,
    S: tl.constexpr = 4,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=S):
        acc = tl.dot(tl.load(a, [bm * BM, k], [BM, BK]), tl.load(b, [k, bn * BN], [BK, BN]), acc)
    tl.store(c, [bm * BM, bn * BN], acc.to(tl.f16))
"""

#: A CUDA driver with one device of compute capability $STUB_CC whose blocks may have
#: $STUB_SHARED bytes of shared memory; modules load and launches succeed (nothing runs).
STUB_DEVICE = r"""
#include <stdlib.h>
static int cc(void) { const char *v = getenv("STUB_CC"); return v ? atoi(v) : 80; }
int cuInit(unsigned f) { (void)f; return 0; }
int cuGetErrorName(int r, const char **s) { (void)r; *s = "STUB_ERROR"; return 0; }
int cuGetErrorString(int r, const char **s) { (void)r; *s = "stub error"; return 0; }
static void *current;
int cuCtxGetCurrent(void **c) { *c = current; return 0; }
int cuCtxSetCurrent(void *c) { current = c; return 0; }
int cuCtxGetDevice(int *d) { *d = 0; return 0; }
int cuDeviceGet(int *d, int o) { *d = o; return 0; }
int cuDevicePrimaryCtxRetain(void **c, int d) { (void)d; *c = (void *)0x1234; return 0; }
int cuDeviceGetAttribute(int *v, int a, int d) {
  (void)d;
  if (a == 75) *v = cc() / 10;
  else if (a == 76) *v = cc() % 10;
  else if (a == 97) *v = atoi(getenv("STUB_SHARED"));
  else return 1;
  return 0;
}
int cuModuleLoadData(void **m, const void *image) { (void)image; *m = (void *)0x1; return 0; }
int cuModuleGetFunction(void **f, void *m, const char *n) { (void)m; (void)n; *f = (void *)0x2; return 0; }
int cuFuncSetAttribute(void *f, int a, int v) { (void)f; (void)a; (void)v; return 0; }
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned sh, void *st, void **p, void **e) {
  (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)st;
  (void)p; (void)e;
  return 0;
}
"""


def test_an_sm80_image_too_big_for_sm86_is_said_at_compile_and_at_launch(tmp_path, cc):
    source = tmp_path / "gemm.py"
    source.write_text(GEMM)
    args = ["compile", f"{source}:gemm", "--arch", "sm_80", "--assume", "all", "-o", str(tmp_path)]
    with pytest.warns(AotWarning) as said:
        assert main(args) == 0
    (warning,) = [w for w in said if issubclass(w.category, AotWarning)]
    text = str(warning.message)
    assert "131072 B" in text and "101376 B" in text and "--arch sm_86 --arch sm_89" in text
    assert manifest(tmp_path)["kernels"][0]["archs"]["sm_80"]["dynamic_shared_bytes"] == 131072
    stub = tmp_path / "libcuda_stub.so"
    (tmp_path / "stub.c").write_text(STUB_DEVICE)
    done = subprocess.run([cc, "-shared", "-fPIC", "-o", str(stub), str(tmp_path / "stub.c")])
    assert done.returncode == 0
    body = (
        """
    int64_t shape[2] = {128, 128};
    void *a = aligned_alloc(64, 128 * 128 * 2), *b = aligned_alloc(64, 128 * 128 * 2);
    void *c = aligned_alloc(64, 128 * 128 * 2);
    int code = gemm(NULL, a, shape, b, shape, c, shape);
    """
        + report("gemm")
        + "return 0;\n"
    )
    runner = write_runner(tmp_path / "run.c", "gemm.h", body)
    program = compile_c(tmp_path / "run", [runner, tmp_path / "gemm.c"], ["-ldl", "-lpthread"])
    env = {"TILELANG_LIBCUDA": str(stub)}
    code, _, message = run_program(program, env={**env, "STUB_CC": "80", "STUB_SHARED": "166912"})
    assert code == OK, message
    for device in ("86", "89"):
        settings = {**env, "STUB_CC": device, "STUB_SHARED": "101376"}
        code, description, message = run_program(program, env=settings)
        assert code == STATUS_CODES["ERROR_ARCH"], message
        assert "131072 B" in message and "at most 101376 B" in message
        assert f"--arch sm_{device}" in message and "shared memory" in description


@pytest.fixture(scope="module")
def cc() -> str:
    from test_aot import c_compiler

    return c_compiler()


# --------------------------------------------------------------------------- what the CLI prints


def test_the_ptx_note_is_printed_only_when_ptx_was_written(kernels_file, tmp_path, capsys):
    spec = f"{kernels_file}:stepped"
    assert main(["compile", spec, "--arch", "cpu", "-o", str(tmp_path / "cpu")]) == 0
    assert "PTX" not in capsys.readouterr().out
    assert main(["compile", spec, "--arch", "sm_80", "-o", str(tmp_path / "gpu")]) == 0
    assert "PTX loads on CUDA 13.0 drivers" in capsys.readouterr().out


#: A pipelined loop whose gather cannot be staged (cp.async cannot fill with 1): a
#: PipelineWarning at the loop's line at every compile, for every target
#: (`conftest.unstageable_gather`).
STAGED = """import tilelang as tl


@tl.kernel(warps=4)
def staged(cache: tl.Tensor[tl.f16, "N", 64], ids: tl.Tensor[tl.i32, "R"], out: tl.Tensor[tl.f32, 1, 64]):
    acc = tl.zeros([1, 64], tl.f32)
    for r in tl.range(0, R, 16, stages=2):
        rows = tl.load(ids, [r], [16], fill=-1)
        x = tl.load(cache, [rows[:, None], 0], [16, 64], fill=1.0)
        acc = acc + tl.sum(x.to(tl.f32), axis=0)
    tl.store(out, [0, 0], acc)
"""


@pytest.mark.parametrize("arch", ["cpu", "sm_80"])
def test_each_warning_of_a_compile_is_given_once(tmp_path, monkeypatch, arch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "staged.py"
    source.write_text(STAGED)
    for attempt in ("built", "read from the disk cache"):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            out = tmp_path / attempt.replace(" ", "_")
            assert main(["compile", f"{source}:staged", "--arch", arch, "-o", str(out)]) == 0
        messages = [str(w.message) for w in said if w.category.__name__ == "PipelineWarning"]
        assert messages, f"{attempt}: the kernel gives no PipelineWarning any more"
        assert len(messages) == len(set(messages)), (attempt, messages)
