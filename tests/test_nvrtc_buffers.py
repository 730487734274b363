"""The NVRTC driver reads NVRTC's outputs (log, PTX, cubin) into buffers of its own.

NVRTC writes its outputs into a buffer the caller hands it. Handed a bytes object, it
wrote into memory Python treats as immutable and shared: `b" " * 1` is CPython's one
cached b" " (every 1-byte bytes object of a value is a single object), and a front-end
error's PTX is 1 byte (its NUL), so one failed compile turned every b" " of the process
into b"\\0" — `io.BytesIO(...).read(1)` of a space included, which is how
`torch.load(weights_only=True)` reads an opcode's argument (memo index 32 became 0).
"""

import io

import pytest

from tilelang.runtime.nvrtc import CudaCompileError, compile_cuda

SOURCES = {
    "compiles": 'extern "C" __global__ void k(float* x) { x[threadIdx.x] = 1.0f; }',
    # No PTX: NVRTC reports a PTX of 1 byte, its terminating NUL.
    "front-end error": 'extern "C" __global__ void k(int* p) { __syncthreads(; }',
    "ptxas error": (
        'extern "C" __global__ void k(int* p) {\n'
        '  asm volatile("no_such_instruction.b32 %0;" :: "r"(p[0]));\n'
        "}\n"
    ),
}


def _changed_one_byte_objects() -> list[int]:
    """The byte values whose shared 1-byte bytes object no longer holds that value."""
    return [value for value in range(256) if bytes([value])[0] != value]


def _one_byte_reads() -> list[int]:
    """Each byte of 0..255 as `read(1)[0]` gives it (the weights_only unpickler's way)."""
    stream = io.BytesIO(bytes(range(256)))
    return [stream.read(1)[0] for _ in range(256)]


@pytest.mark.parametrize("case", SOURCES)
def test_a_compile_leaves_the_shared_one_byte_objects_as_they_were(case):
    try:
        binary = compile_cuda(SOURCES[case], "k", "sm_80")
    except CudaCompileError:
        assert case != "compiles"
    else:
        assert case == "compiles"
        assert binary.cubin[:4] == b"\x7fELF" and binary.ptx.startswith("//")
    assert _changed_one_byte_objects() == []
    assert _one_byte_reads() == list(range(256))
