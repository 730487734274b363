"""Sub-byte tensors (`PackedArray`s) reach a compiled CPU kernel as their own bytes: the
launch addresses the caller's `data`, stores land in it, nothing is unpacked or packed
again per call; strided or misaligned bytes are copied as bytes and written back. The
results are the interpreter's bit for bit and a numpy oracle's (a packer written here
from np.packbits, not tilelang's). The GPU upload copies the packed bytes once, and the
torch bridge's packed uint8 tensors and `tilelang.quant`'s weights are passed in place."""

import ctypes
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tilelang as tl
from tilelang import dtypes
from tilelang.runtime import gpu
from tilelang.runtime.buffers import address
from tilelang.runtime.cpu import CpuKernel
from tilelang.runtime.host_tensor import HostTensor


@tl.kernel(warps=1)
def move(
    x: tl.Tensor["T", "N"],
    y: tl.Tensor["T", "M"],
    w: tl.Tensor[tl.f32, "N"],
    a: tl.i32,
    c: tl.i32,
    T: tl.constexpr = tl.u4,
    BLOCK: tl.constexpr = 64,
):
    """y[b·BLOCK + c + i] = x[b·BLOCK + a + i] (0 past N), w[j] = x[j + a] as f32."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    tile = tl.load(x, [b * BLOCK + a], [BLOCK])
    tl.store(y, [b * BLOCK + c], tile)
    tl.store(w, [b * BLOCK], tile.to(tl.f32))


@tl.kernel(warps=1)
def copy4(x: tl.Tensor[tl.u4, "N"], y: tl.Tensor[tl.u4, "N"], BLOCK: tl.constexpr = 64):
    b = tl.blocks(tl.cdiv(N, BLOCK))
    tl.store(y, [b * BLOCK], tl.load(x, [b * BLOCK], [BLOCK]))


@tl.kernel(warps=1)
def touch4(w: tl.Tensor[tl.u4, "N"], out: tl.Tensor[tl.i32, 1]):
    tl.store(out, [0], tl.load(w, [0], [32]).to(tl.i32)[:1])


TYPES = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "i4", "f4e2m1"]
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def oracle_pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Code i at bits [i·bits, (i+1)·bits) of a little-endian byte stream."""
    bit_rows = (codes.astype(np.uint64)[:, None] >> np.arange(bits, dtype=np.uint64)) & 1
    return np.packbits(bit_rows.astype(np.uint8).ravel(), bitorder="little")


def oracle_value(name: str, code: int) -> float:
    if name == "f4e2m1":
        return (-1.0 if code & 8 else 1.0) * E2M1[code & 7]
    if name.startswith("i"):
        return float(code - 16 if code >= 8 else code)
    return float(code)


def expected(name: str, xc, yc, a: int, c: int, block: int):
    n, m = len(xc), len(yc)
    y, w = yc.copy(), np.zeros(n, np.float32)
    for j in range(m):
        if j >= c and (j - c) // block < -(-n // block):
            y[j] = xc[j - c + a] if j - c + a < n else 0
    for j in range(n):
        w[j] = oracle_value(name, int(xc[j + a])) if j + a < n else 0.0
    return y, w


@pytest.fixture
def launches(monkeypatch):
    """The tensor arguments of every CPU launch: {name: the array the kernel got}."""
    seen: list[dict] = []
    launch = CpuKernel.launch

    def spy(self, args, *rest, **kwargs):
        seen.append({p.name: args[p.name] for p, _ in self._tensors})
        return launch(self, args, *rest, **kwargs)

    monkeypatch.setattr(CpuKernel, "launch", spy)
    return seen


def never_unpacked_or_repacked(monkeypatch) -> None:
    def refused(*args, **kwargs):
        raise AssertionError("a CPU call unpacked or repacked a PackedArray")

    monkeypatch.setattr(dtypes.PackedArray, "codes", refused)
    monkeypatch.setattr("tilelang.runtime.buffers.pack_bits", refused)
    monkeypatch.setattr("tilelang.runtime.buffers.unpack_bits", refused)
    monkeypatch.setattr("tilelang.runtime.host_tensor.pack_bits", refused)


def same_bytes(buffer: np.ndarray, data: np.ndarray) -> bool:
    return address(buffer) == address(data) and np.shares_memory(buffer, data)


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize(("n", "m", "a", "c"), [(101, 131, 3, 5), (64, 64, 0, 0), (37, 40, 1, 2)])
def test_compiled_equals_interpreter_and_numpy(name, n, m, a, c):
    t = tl.dtype(name)
    rng = np.random.default_rng(n * 31 + m + a + t.bits)
    xc = rng.integers(0, 1 << t.bits, n, dtype=np.uint8)
    yc = rng.integers(0, 1 << t.bits, m, dtype=np.uint8)
    x = tl.pack_codes(xc, t)
    compiled, interpreted = tl.pack_codes(yc, t), tl.pack_codes(yc, t)
    w_compiled, w_interpreted = np.zeros(n, np.float32), np.zeros(n, np.float32)
    move(x, compiled, w_compiled, a, c, T=t)
    move.interpret(x, interpreted, w_interpreted, a, c, T=t)
    y_want, w_want = expected(name, xc, yc, a, c, 64)
    assert np.array_equal(compiled.data, oracle_pack(y_want, t.bits))
    assert np.array_equal(interpreted.data, compiled.data)
    assert np.array_equal(w_compiled.view(np.uint32), w_interpreted.view(np.uint32))
    assert np.array_equal(w_compiled, w_want)
    assert np.array_equal(x.data, oracle_pack(xc, t.bits))  # only read: untouched


@pytest.mark.parametrize("name", ["u1", "u3", "u4", "u7", "i4", "f4e2m1"])
def test_the_kernel_reads_and_writes_the_callers_bytes(name, launches, monkeypatch):
    t = tl.dtype(name)
    rng = np.random.default_rng(t.bits)
    xc, yc = rng.integers(0, 1 << t.bits, (2, 203), dtype=np.uint8)
    x, y = tl.pack_codes(xc, t), tl.pack_codes(yc, t)
    y_data = y.data
    w = np.zeros(203, np.float32)
    move(x, y, w, 0, 0, T=t)  # compiles (which may pack constants)
    never_unpacked_or_repacked(monkeypatch)
    y.data[...] = oracle_pack(yc, t.bits)
    move(x, y, w, 7, 3, T=t)
    got = launches[-1]
    assert same_bytes(got["x"], x.data) and same_bytes(got["y"], y.data)
    assert y.data is y_data
    y_want, _ = expected(name, xc, yc, 7, 3, 64)
    assert np.array_equal(y.data, oracle_pack(y_want, t.bits))


def test_a_large_u4_weight_is_not_copied(launches, monkeypatch):
    codes = np.arange(1 << 20, dtype=np.uint64) % 16
    w4 = tl.pack_codes(codes, tl.u4)
    out = np.zeros(1, np.int32)
    never_unpacked_or_repacked(monkeypatch)
    touch4(w4, out)
    assert same_bytes(launches[-1]["w"], w4.data) and out[0] == codes[0]
    w4.data[0] = 0x0B  # the next call reads the bytes as they are now
    touch4(w4, out)
    assert out[0] == 0x0B


def test_strided_and_misaligned_bytes_are_copied_and_written_back(launches):
    t = tl.u3
    rng = np.random.default_rng(3)
    xc, yc = rng.integers(0, 8, (2, 77), dtype=np.uint8)
    nbytes = len(oracle_pack(xc, 3))
    base = np.arange(3 * nbytes + 32, dtype=np.uint8)
    start = 2 * nbytes + (1 - address(base) - 2 * nbytes) % 16  # 1 past a 16-byte boundary
    strided, misaligned = base[: 2 * nbytes : 2], base[start : start + nbytes]
    assert address(misaligned) % 16 == 1
    strided[...], misaligned[...] = oracle_pack(xc, 3), oracle_pack(yc, 3)
    before = base.copy()
    x, y = tl.PackedArray(strided, t, 77), tl.PackedArray(misaligned, t, 77)
    w = np.zeros(77, np.float32)
    move(x, y, w, 2, 1, T=t)
    y_want, w_want = expected("u3", xc, yc, 2, 1, 64)
    assert np.array_equal(misaligned, oracle_pack(y_want, 3)) and np.array_equal(w, w_want)
    got = launches[-1]
    assert not np.shares_memory(got["x"], base) and not np.shares_memory(got["y"], base)
    # Only y's bytes changed (the strided x's bytes and the gaps between them did not).
    changed = np.flatnonzero(base != before)
    assert ((changed >= start) & (changed < start + nbytes)).all()


def test_read_only_bytes_are_read_in_place_and_refused_as_an_output(launches):
    xc = np.random.default_rng(4).integers(0, 16, 96, dtype=np.uint8)
    frozen = np.frombuffer(oracle_pack(xc, 4).tobytes(), np.uint8)
    assert not frozen.flags.writeable
    x = tl.PackedArray(frozen, tl.u4, 96)
    y = tl.pack_codes(np.zeros(96, np.uint8), tl.u4)
    w = np.zeros(96, np.float32)
    move(x, y, w, 0, 0)
    assert np.array_equal(y.data, frozen) and np.shares_memory(launches[-1]["x"], frozen)
    with pytest.raises(ValueError, match=r"move\(\): parameter 'y' is written .* read-only"):
        move(y, x, w, 0, 0)


def test_a_host_tensor_unpacks_only_for_a_reader_of_its_codes():
    codes = np.random.default_rng(5).integers(0, 8, (3, 11), dtype=np.uint8)
    packed = tl.pack_codes(codes, tl.u3)
    host = HostTensor.wrap(packed)
    assert host.shape == (3, 11) and host.packed_bytes() is packed.data
    host.finish()  # nothing unpacked, nothing stored: the bytes stay
    assert np.array_equal(packed.data, oracle_pack(codes.ravel(), 3))
    host.codes[1, 2] = (codes[1, 2] + 1) % 8  # the interpreter's way: codes, then finish
    host.dirty = True
    assert host.packed_bytes() is None  # the codes, not the bytes, are the tensor now
    host.finish()
    codes[1, 2] = (codes[1, 2] + 1) % 8
    assert np.array_equal(packed.data, oracle_pack(codes.ravel(), 3))


GUARDED = textwrap.dedent(
    """
    import ctypes, mmap, sys
    import numpy as np
    import tilelang as tl
    sys.path.insert(0, {here!r})
    from test_packed_zero_copy import move, oracle_pack

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    PAGE = mmap.PAGESIZE
    maps = []

    def guarded(content):
        # bytes that end where an unreadable page begins (16-byte aligned: passed in place)
        maps.append(mmap.mmap(-1, 2 * PAGE))
        page = np.frombuffer(maps[-1], np.uint8)
        assert libc.mprotect(page.ctypes.data + PAGE, PAGE, 0) == 0
        view = page[PAGE - len(content) : PAGE]
        assert view.ctypes.data % 16 == 0  # so the launch takes it in place
        view[...] = content
        return view

    rng = np.random.default_rng(6)
    for name, n in [("u1", 127), ("u3", 127), ("u7", 146), ("f4e2m1", 63)]:
        t = tl.dtype(name)
        xc, yc = rng.integers(0, 1 << t.bits, (2, n), dtype=np.uint8)
        x = tl.PackedArray(guarded(oracle_pack(xc, t.bits)), t, n)
        y = tl.PackedArray(guarded(oracle_pack(yc, t.bits)), t, n)
        want = tl.pack_codes(yc, t)
        move.interpret(x, want, np.zeros(n, np.float32), 0, 1, T=t)
        move(x, y, np.zeros(n, np.float32), 0, 1, T=t)
        assert y == want, name
    print("in bounds")
    """
)


def test_in_place_bytes_are_not_accessed_past_their_end(tmp_path):
    """Passed in place, a packed tensor has no slack after its last byte (a copy had):
    the kernel reads and merges codes there without touching the next byte, which here
    is an unreadable page (a crash, in a subprocess, if it did)."""
    here = str(__import__("pathlib").Path(__file__).resolve().parent)
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED.format(here=here))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and "in bounds" in done.stdout, done.stderr[-3000:]


def test_a_quantized_weight_is_passed_in_place(launches, monkeypatch):
    from tilelang import quant
    from tilelang.quant.operands import operands

    rng = np.random.default_rng(7)
    weights = (rng.standard_normal((256, 128)) * 0.05).astype(np.float32)
    qw = quant.quantize(weights, tl.u4, group_size=128)
    x = rng.standard_normal((1, 256)).astype(np.float16)
    first = quant.matmul(x, qw)
    never_unpacked_or_repacked(monkeypatch)
    launches.clear()
    again = quant.matmul(x, qw)
    assert np.array_equal(first.view(np.uint16), again.view(np.uint16))
    codes = operands(qw, x.dtype).weight.codes.data  # as the kernels read them, made once
    assert any(same_bytes(arg, codes) for call in launches for arg in call.values())


def test_torch_packed_uint8_tensors_are_passed_in_place(launches):
    torch = pytest.importorskip("torch")
    import tilelang.torch as tt

    copy = tt.op(copy4, "tltest_packed::copy4")
    codes = np.random.default_rng(8).integers(0, 16, 90, dtype=np.uint8)
    x = torch.from_numpy(oracle_pack(codes, 4))
    y = copy(x)  # a uint8 output the operator allocates, 45 bytes
    tensors = launches[-1]
    assert address(tensors["x"]) == x.data_ptr() and address(tensors["y"]) == y.data_ptr()
    assert y.dtype == torch.uint8 and np.array_equal(y.numpy(), oracle_pack(codes, 4))


class _Driver:
    """The driver calls a `DeviceBuffer` upload makes; `uploads` holds the bytes sent."""

    class CUresult:
        CUDA_SUCCESS = 0

    def __init__(self) -> None:
        self.uploads: list[bytes] = []
        self.next = 0x7F0000000000

    def cuMemAlloc(self, nbytes):
        pointer, self.next = self.next, self.next + (1 << 20)
        return 0, pointer

    def cuMemFree(self, pointer):
        return (0,)

    def cuCtxSynchronize(self):
        return (0,)

    def cuMemcpyHtoD(self, pointer, source, nbytes):
        self.uploads.append(ctypes.string_at(source, nbytes))
        return (0,)


@pytest.mark.parametrize("step", [1, 3])
def test_a_gpu_upload_copies_the_packed_bytes_once(monkeypatch, step):
    fake = _Driver()
    monkeypatch.setattr(gpu, "driver", lambda: fake)
    monkeypatch.setattr(gpu, "_context", lambda: None)
    codes = np.random.default_rng(9).integers(0, 32, 61, dtype=np.uint8)
    packed = oracle_pack(codes, 5)
    base = np.zeros(len(packed) * step, np.uint8)
    base[::step] = packed
    buffer = gpu.DeviceBuffer(tl.PackedArray(base[::step], tl.dtype("u5"), 61))
    assert fake.uploads == [packed.tobytes()]  # the logical bytes, strided or not
    assert buffer.nbytes == len(packed) and buffer.dtype == tl.dtype("u5")
