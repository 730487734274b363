"""Every example kernel on the GPU, checked against the CPU backend on the same inputs.

Each `ExampleCase` builds host inputs (numpy arrays, `tilelang.PackedArray` for packed
weights) the way the example's `main()` does, runs the example's kernel through the CPU
(LLVM) backend and on the GPU (torch CUDA tensors; packed weights as
`tilelang.DeviceBuffer`), and compares the outputs: bit for bit where the math is exact
(integers, data movement, one IEEE operation per element), else within the example's
own tolerance. The GPU result is also checked against the example's numpy reference.

    python3 benchmarks/gpu_examples.py      # just this part, in this process
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpu_common import Case, CheckFailed, Context, compare, example_stems, load_example

Inputs = tuple[list[Any], dict[str, Any], tuple[int, ...]]  # arguments, constexprs, outputs


@dataclass(frozen=True)
class ExampleCase:
    example: str  # the file's stem: examples/<example>.py
    kernel: str  # the kernel's name in that module
    label: str
    inputs: Callable[[Any], Inputs]  # module -> (arguments, constexprs, output positions)
    # module, arguments -> ("exact", 0) / ("abs", tol) / ("rel", tol of max |reference|)
    tolerance: Callable[[Any, list[Any]], tuple[str, float]]
    reference: Callable[[Any, list[Any]], Any] | None = None  # module, arguments -> output
    budget_s: float = 3.0  # seconds on an H100: NVRTC, the LLVM backend, both runs
    deterministic: bool = True  # False: blocks meet by atomic additions in any order

    @property
    def name(self) -> str:
        return f"examples/{self.example}.py {self.kernel} {self.label}"


def _rng(seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed)


def exact(_module, _args) -> tuple[str, float]:
    return "exact", 0.0


# --------------------------------------------------------------------------- the cases


def _vector_add(n: int):
    def inputs(module) -> Inputs:
        import numpy as np

        rng = _rng()
        x, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
        return [x, y, np.zeros_like(x)], {}, (2,)

    return ExampleCase(
        "vector_add",
        "vector_add",
        f"f32 n={n}",
        inputs,
        exact,
        lambda m, a: m.reference(a[0], a[1]),
    )


def _softmax(rows: int, cols: int):
    def inputs(module) -> Inputs:
        import numpy as np

        x = _rng().standard_normal((rows, cols), dtype=np.float32) * 4
        return [x, np.zeros_like(x)], {}, (1,)

    return ExampleCase(
        "softmax",
        "softmax",
        f"f32 {rows}x{cols}",
        inputs,
        lambda m, a: ("abs", 1e-6),  # the example's own bound against float64 numpy
        lambda m, a: m.reference(a[0]),
    )


def _matmul(m_: int, k: int, n: int, **tiles):
    def inputs(module) -> Inputs:
        import numpy as np

        rng = _rng()
        a = rng.standard_normal((m_, k)).astype(np.float16)
        b = rng.standard_normal((k, n)).astype(np.float16)
        return [a, b, np.zeros((m_, n), np.float16)], dict(tiles), (2,)

    tile_text = " ".join(f"{key}={value}" for key, value in tiles.items())
    return ExampleCase(
        "matmul",
        "matmul",
        f"f16 {m_}x{k} @ {k}x{n}" + (f" {tile_text}" if tile_text else ""),
        inputs,
        lambda module, a: ("rel", module.tolerance(a[0].shape[1])),
        lambda module, a: module.reference(a[0], a[1]),
        budget_s=4.0,
    )


def _quant_matmul(m_: int, k: int, n: int, weight_type: str, group: int):
    def inputs(module) -> Inputs:
        import numpy as np

        import tilelang as tl

        wt = getattr(tl, weight_type)
        x, w, s = module.make_inputs(m_, k, n, wt, group)
        packed = module.pack_weights(w)  # for the kernel's default tiles
        return [x, packed, s, np.zeros((m_, n), np.float16)], {"WT": wt, "G": group}, (3,)

    return ExampleCase(
        "quant_matmul",
        "quant_matmul",
        f"{weight_type} {m_}x{k}x{n} g{group}",
        inputs,
        lambda module, a: ("rel", module.tolerance(a[0].shape[1])),
        lambda module, a: module.reference(a[0], a[1], a[2], group),
    )


def _row_sum(rows: int, cols: int, type_name: str):
    def inputs(module) -> Inputs:
        import numpy as np

        import tilelang as tl

        if type_name == "i32":
            x = _rng().integers(-1000, 1000, (rows, cols)).astype(np.int32)
        else:
            x = _rng().standard_normal((rows, cols)).astype(np.float32)
        return [x, np.zeros(rows, x.dtype)], {"T": getattr(tl, type_name)}, (1,)

    def tolerance(module, args) -> tuple[str, float]:
        import numpy as np

        x = args[0]
        if x.dtype == np.int32:
            return "exact", 0.0
        # f32 additions in some order: each rounds by at most 2^-24 of a partial sum.
        return "abs", x.shape[1] * 2.0**-22 * float(np.abs(x).sum(axis=1).max())

    def reference(module, args):
        x = args[0]
        return x.astype("float64").sum(axis=1).astype(x.dtype)

    return ExampleCase(
        "row_sum", "row_sum", f"{type_name} {rows}x{cols}", inputs, tolerance, reference
    )


def _cumsum(rows: int, cols: int, type_name: str):
    def inputs(module) -> Inputs:
        import numpy as np

        import tilelang as tl

        if type_name == "i32":
            x = _rng().integers(-100, 100, (rows, cols)).astype(np.int32)
        else:
            x = _rng().standard_normal((rows, cols)).astype(np.float32)
        return [x, np.zeros_like(x)], {"T": getattr(tl, type_name)}, (1,)

    def tolerance(module, args) -> tuple[str, float]:
        import numpy as np

        x = args[0]
        if x.dtype == np.int32:
            return "exact", 0.0
        return "abs", x.shape[1] * 2.0**-22 * float(np.abs(x).sum(axis=1).max())

    def reference(module, args):
        import numpy as np

        x = args[0]
        return np.cumsum(x.astype(np.float64), axis=1).astype(x.dtype)

    return ExampleCase(
        "cumsum", "cumsum_rows", f"{type_name} {rows}x{cols}", inputs, tolerance, reference
    )


def _mamba_scan(batch: int, channels: int, states: int, length: int):
    """The library's selective scan (the example's `scan_into`: a function, not a kernel,
    whose last argument receives the output)."""

    def inputs(module) -> Inputs:
        import numpy as np

        rng = _rng()
        shape = (batch, channels, length)
        u, z = (
            rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(shape, dtype=np.float32),
        )
        delta = rng.uniform(-3.0, 1.0, shape).astype(np.float32)
        A = -rng.uniform(1.0, 16.0, (channels, states)).astype(np.float32)
        B = rng.standard_normal((batch, states, length), dtype=np.float32)
        C = rng.standard_normal((batch, states, length), dtype=np.float32)
        D = rng.standard_normal(channels, dtype=np.float32)
        bias = np.zeros(channels, np.float32)
        return [u, delta, A, B, C, D, z, bias, np.zeros(shape, np.float32)], {}, (8,)

    def tolerance(module, args) -> tuple[str, float]:
        return "abs", 1e-4

    def reference(module, args):
        return module.reference(*args[:8])[0].astype("float32")

    return ExampleCase(
        "mamba_scan",
        "scan_into",
        f"{batch}x{channels}x{states} L={length}",
        inputs,
        tolerance,
        reference,
    )


def _flash_attention(batch: int, seq: int, heads: int, kv_heads: int, d: int, causal: bool):
    """The library's flash attention (the example's `attention_into`: a function, not a
    kernel, whose fourth argument receives the output)."""

    def inputs(module) -> Inputs:
        import numpy as np

        rng = _rng()
        q = rng.standard_normal((batch, seq, heads, d)).astype(np.float16)
        k, v = (rng.standard_normal((batch, seq, kv_heads, d)).astype(np.float16) for _ in "kv")
        return [q, k, v, np.zeros_like(q)], {"causal": causal}, (3,)

    def tolerance(module, args) -> tuple[str, float]:
        return "abs", 3e-3  # the example's: P rounded to f16 before P·V

    def reference(module, args):
        return module.attention_reference(*args[:3], causal)

    return ExampleCase(
        "flash_attention",
        "attention_into",
        f"{batch}x{seq}x{heads}x{d} GQA {heads // kv_heads}{' causal' if causal else ''}",
        inputs,
        tolerance,
        reference,
        budget_s=6.0,
    )


def _nf4_matmul(m_: int, k: int, n: int, split_k: int):
    """The NF4 codebook matmul; its split-K slices meet in y by atomic additions, whose
    order the GPU does not fix: within the example's tolerance, not bit for bit."""

    def made(module):
        import numpy as np

        rng = _rng()
        w = (rng.standard_t(4, (k, n)) * 0.02).astype(np.float32)
        codes, absmax = module.quantize_nf4(w)
        return rng.standard_normal((m_, k)).astype(np.float16), codes, absmax

    def inputs(module) -> Inputs:
        import numpy as np

        x, codes, absmax = made(module)
        packed = module.pack_weights(codes)
        return (
            [x, packed, absmax, module.NF4, np.zeros((m_, n), np.float32)],
            {"SPLIT_K": split_k},
            (4,),
        )

    def reference(module, _args):
        x, codes, absmax = made(module)
        return x.astype(np.float64) @ module.dequantize_nf4(codes, absmax).astype(np.float64)

    import numpy as np

    return ExampleCase(
        "nf4_matmul",
        "nf4_matmul",
        f"{m_}x{k}x{n} split-K {split_k}",
        inputs,
        lambda module, a: ("rel", 1e-3),
        reference,
        deterministic=False,
    )


QUANT_TYPES = ("u4", "i4", "u3", "i2", "u1", "u8", "f4e2m1", "f6e3m2", "f8e4m3")


def example_cases() -> list[ExampleCase]:
    """Every example's GPU cases: the shapes of its main(), a few edges (a partial last
    block, m=1, other tiles) and, for the integer kernels, f32 too."""
    return [
        _vector_add(10_000),
        _vector_add((1 << 20) + 3),
        _softmax(37, 300),
        _softmax(129, 1000),
        _matmul(100, 96, 72),
        _matmul(256, 512, 192),
        _matmul(200, 160, 136, BM=128, BN=64, BK=32),
        *(_quant_matmul(16, 256, 96, t, 64) for t in QUANT_TYPES),
        _quant_matmul(1, 512, 192, "u4", 128),
        _quant_matmul(5, 512, 320, "i4", 128),
        _row_sum(50, 333, "i32"),
        _row_sum(50, 333, "f32"),
        _cumsum(9, 200, "i32"),
        _cumsum(33, 1000, "i32"),
        _cumsum(9, 200, "f32"),
        _mamba_scan(2, 8, 16, 100),
        _mamba_scan(1, 16, 5, 257),
        _flash_attention(2, 100, 8, 2, 64, True),
        _flash_attention(1, 257, 4, 4, 128, False),
        _nf4_matmul(3, 512, 256, 2),
        _nf4_matmul(1, 1024, 384, 8),
    ]


# --------------------------------------------------------------------------- running


def copy_args(args: list[Any]) -> list[Any]:
    import numpy as np

    import tilelang as tl

    out = []
    for a in args:
        if isinstance(a, tl.PackedArray):
            out.append(tl.PackedArray(a.data.copy(), a.dtype, a.shape))
        elif isinstance(a, np.ndarray):
            out.append(a.copy())
        else:
            out.append(a)
    return out


def run_cpu(kernel, args, constexprs, outputs) -> list[Any]:
    """The CPU (LLVM) backend's outputs."""
    args = copy_args(args)
    kernel(*args, **constexprs)
    return [args[i] for i in outputs]


def run_interpreter(kernel, args, constexprs, outputs) -> list[Any]:
    """The reference interpreter's outputs (a stand-in for the GPU in tests)."""
    args = copy_args(args)
    kernel.interpret(*args, **constexprs)
    return [args[i] for i in outputs]


def to_device(value: Any, torch) -> Any:
    """A host argument on the GPU: numpy arrays as torch CUDA tensors (tilelang's own
    `DeviceBuffer` without torch), packed weights as a `DeviceBuffer`."""
    import numpy as np

    import tilelang as tl

    if isinstance(value, tl.PackedArray) or (torch is None and isinstance(value, np.ndarray)):
        return tl.DeviceBuffer(value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).to("cuda")
    return value


def to_host(value: Any) -> Any:
    import tilelang as tl

    if isinstance(value, tl.DeviceBuffer):
        return value.numpy()
    return value.cpu().numpy()


def gpu_runner(torch):
    """Runs a kernel on the GPU and returns its outputs on the host."""

    def run(kernel, args, constexprs, outputs) -> list[Any]:
        device = [to_device(a, torch) for a in args]
        kernel(*device, **constexprs)
        if torch is not None:
            torch.cuda.synchronize()
        return [to_host(device[i]) for i in outputs]

    return run


def check_example(case: ExampleCase, run_device, run_host=run_cpu) -> dict[str, Any]:
    """Runs `case` through `run_device` (the GPU) and `run_host` (the CPU backend) on the
    same inputs; raises `CheckFailed` unless they agree and the device result meets the
    example's reference."""
    module = load_example(case.example)
    kernel = getattr(module, case.kernel)
    args, constexprs, outputs = case.inputs(module)
    host = run_host(kernel, args, constexprs, outputs)
    device = run_device(kernel, args, constexprs, outputs)
    mode, tolerance = case.tolerance(module, args)
    result: dict[str, Any] = {"tolerance": [mode, tolerance]}
    problems = []
    for position, got, want in zip(outputs, device, host, strict=True):
        vs_cpu = compare(got, want, mode, tolerance)
        result[f"output {position} vs CPU backend"] = vs_cpu.as_dict()
        if not vs_cpu.ok:
            problems.append(f"output {position}, GPU vs CPU backend: {vs_cpu.describe()}")
    if case.reference is not None:
        want = case.reference(module, args)
        # The reference rounds once; an exact kernel must match it exactly.
        vs_reference = compare(device[0], want, mode, tolerance)
        result["vs reference"] = vs_reference.as_dict()
        if not vs_reference.ok:
            problems.append(f"GPU vs the example's reference: {vs_reference.describe()}")
    if problems:
        raise CheckFailed("; ".join(problems))
    result["summary"] = result[f"output {outputs[0]} vs CPU backend"]["summary"]
    return result


def _run_quant_matmul_main(context: Context) -> dict[str, Any]:
    """The example's own main(): on a GPU it runs every weight type through
    DeviceBuffers and checks against numpy."""
    import contextlib
    import io

    import tilelang as tl

    if not tl.gpu_available():
        raise CheckFailed("tilelang sees no GPU, so the example's main() would run on the CPU")
    module = load_example("quant_matmul")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module.main()
    text = printed.getvalue()
    if "GPU" not in text:
        raise CheckFailed(f"main() did not run on the GPU:\n{text}")
    return {"summary": "the example's own GPU check passed", "output": text}


def _torch_or_none(context: Context):
    try:
        return context.torch
    except Exception:
        return None


def cases() -> list[Case]:
    """The examples part of the self-check: one case per `ExampleCase`, the quantized
    matmul's own main(), and a failing case for an example that has no GPU case."""
    found = []
    covered = set()
    for example in example_cases():
        covered.add(example.example)

        def run(context: Context, example=example) -> dict[str, Any]:
            return check_example(example, gpu_runner(_torch_or_none(context)))

        found.append(Case(example.name, example.budget_s, run, "GPU vs CPU backend"))
    found.append(
        Case(
            "examples/quant_matmul.py main()",
            10.0,  # 9 weight types, then split-K: 2 more kernels (atomic; workspace, one launch)
            _run_quant_matmul_main,
            "the example's own GPU path (DeviceBuffer), every weight type, both split-K",
        )
    )
    for stem in example_stems():
        if stem not in covered:
            found.append(Case(f"examples/{stem}.py (no GPU case)", 0.0, _missing(stem), "MISSING"))
    return found


def _missing(stem: str):
    def run(context: Context) -> dict[str, Any]:
        raise CheckFailed(
            f"examples/{stem}.py has no GPU case: add one to example_cases() in "
            "benchmarks/gpu_examples.py"
        )

    return run


if __name__ == "__main__":
    import sys

    from gpu_common import run_standalone

    sys.exit(run_standalone(cases()))
