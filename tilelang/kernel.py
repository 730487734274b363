"""`@tilelang.kernel`: the object a decorated kernel becomes, which runs the pipeline.

A `Kernel` reads its parameters once (at decoration), compiles the body to block IR
once per set of compile-time constants (cached), checks every argument of a call
before anything runs, and runs the kernel. A call on host arrays specializes the
kernel on what the sizes are divisible by (`Function.assume`), runs the pass pipeline,
lowers to thread IR and runs that through the LLVM CPU backend (every step cached);
`kernel.interpret(...)` runs the frontend's block IR in the reference interpreter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.printer import print_function
from tilelang.ir.thread import ThreadFunction
from tilelang.ir.thread_text import print_thread_function
from tilelang.ir.types import ScalarType, TensorType
from tilelang.ir.verify import verify
from tilelang.lang.builder import Builder, building
from tilelang.lang.errors import TileLangError
from tilelang.lang.frontend import Func, FunctionCompiler, SourceFunction
from tilelang.lang.signature import (
    ConstexprParam,
    TensorParam,
    read_signature,
    resolve_tensor,
    size_symbols,
)
from tilelang.lang.values import INDEX, Scalar, Tensor
from tilelang.pipeline import PIPELINE, lower_function, run_pipeline
from tilelang.runtime import interpreter
from tilelang.runtime.arguments import BoundArguments, bind_arguments
from tilelang.runtime.buffers import byte_buffers

Warps = int | Callable[..., int]

#: The largest divisor a size is specialized on: 16 bytes of 1-bit elements, so that
#: masks stay constant over every 16-byte run of any dtype.
MAX_SIZE_DIVISOR = 128


class CompiledKernel:
    """One specialization, compiled: block IR after every pass, the thread IR and, for a
    GPU target, the CUDA source, PTX, cubin and resources.

    `stats` counts what the lowering selected (mma, ldmatrix, dequantization recipes
    and their scalar fallback, access widths, ...). A GPU build that came from the
    disk cache ran no pass; `stages` then runs them on first use.
    """

    def __init__(self, name: str, stages: Callable[[], dict[str, ir.Function]], thread, cuda=None):
        self.name = name
        self._stages = stages
        self.thread: ThreadFunction = thread
        self.cuda = cuda  # tilelang.runtime.cuda_build.CudaBuild, for a GPU target

    @functools.cached_property
    def stages(self) -> dict[str, ir.Function]:
        return self._stages()

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.thread.stats)

    def _gpu(self, what: str):
        if self.cuda is None:
            raise ValueError(
                f"{self.name}: {what} exists for a GPU target (compile(target='sm_90'))"
            )
        return self.cuda

    @property
    def target(self) -> str:
        return self.cuda.arch if self.cuda is not None else "cpu"

    @property
    def source(self) -> str:
        return self._gpu("the CUDA source").source

    @property
    def ptx(self) -> str:
        return self._gpu("PTX").ptx

    @property
    def cubin(self) -> bytes:
        return self._gpu("a cubin").cubin

    @property
    def resources(self):
        return self._gpu("resources").resources

    def ir(self, stage: str = "lower") -> str:
        """The IR after `stage` (a pass name, "frontend", or "lower" for the thread IR)."""
        if stage == "lower":
            return print_thread_function(self.thread)
        if stage not in self.stages:
            names = ", ".join((*self.stages, "lower"))
            raise ValueError(f"no IR stage {stage!r}; the stages are {names}")
        return print_function(self.stages[stage])


class Kernel:
    def __init__(self, fn: Callable, warps: Warps = 4):
        self.fn = fn
        self.warps = warps
        self.params = read_signature(fn)
        self._source: SourceFunction | None = None
        self._specializations: dict[tuple, ir.Function] = {}
        self._stages: dict[ir.Function, dict[str, ir.Function]] = {}
        self._compiled: dict[tuple, CompiledKernel] = {}
        functools.update_wrapper(self, fn)

    @property
    def source(self) -> SourceFunction:
        if self._source is None:
            self._source = SourceFunction.of(self.fn)
        return self._source

    # -- compile-time constants ----------------------------------------------------------

    def constants(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The values of every constexpr parameter: defaults, then `overrides`."""
        declared = {p.name: p for p in self.params if isinstance(p, ConstexprParam)}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            names = ", ".join(declared) or "none"
            raise TypeError(
                f"{self.fn.__name__}(): {', '.join(unknown)} is not a tl.constexpr parameter "
                f"(its constexpr parameters: {names})"
            )
        values = {}
        for name, param in declared.items():
            if name in overrides:
                values[name] = overrides[name]
            elif param.required:
                raise TypeError(f"{self.fn.__name__}(): constexpr parameter {name} needs a value")
            else:
                values[name] = param.default
        return values

    def specialize(self, **constexprs: Any) -> ir.Function:
        """The block IR of this kernel for the given compile-time constants (cached)."""
        constants = self.constants(constexprs)
        key = tuple((k, _hashable(v)) for k, v in sorted(constants.items()))
        if key not in self._specializations:
            self._specializations[key] = self._build(constants)
        return self._specializations[key]

    def stages(
        self, assume: dict[str, int] | None = None, **constexprs: Any
    ) -> dict[str, ir.Function]:
        """The block IR after the frontend and after each pass, by name (cached).

        `assume` maps size names to a power of two each size is a multiple of (the
        launch derives it from the actual sizes; `None` assumes nothing).
        """
        function = self.specialize(**constexprs)
        facts = tuple(sorted((assume or {}).items()))
        function = replace(function, assume=facts)
        if function not in self._stages:
            self._stages[function] = run_pipeline(function)
        return self._stages[function]

    def ir(self, stage: str = "frontend", **constexprs: Any) -> str:
        """The block IR as text, as the frontend made it or after the pass `stage`."""
        stages = self.stages(**constexprs)
        if stage not in stages:
            raise ValueError(f"no IR stage {stage!r}; the stages are {', '.join(stages)}")
        return print_function(stages[stage])

    def compile(
        self, assume: dict[str, int] | str | None = "all", target: str = "cpu", **constexprs: Any
    ) -> CompiledKernel:
        """Compiles one specialization (cached in memory; GPU builds also on disk).

        `assume`: a dict of size name -> divisor, `None` for no facts, or "all" (the
        default): every size a multiple of 128, as sizes of real models are.
        `target`: "cpu" (thread IR for the LLVM backend) or a GPU architecture such as
        "sm_80" or "sm_90a" (CUDA source, PTX, cubin; no GPU needed).
        """
        function = self.specialize(**constexprs)
        if assume == "all":
            assume = {size.name: MAX_SIZE_DIVISOR for size in function.sizes}
        facts = tuple(sorted((assume or {}).items()))
        key = (function, facts, target)
        if key in self._compiled:
            return self._compiled[key]

        def stages() -> dict[str, ir.Function]:
            return self.stages(dict(facts), **constexprs)

        def thread() -> ThreadFunction:
            return lower_function(stages()[PIPELINE[-1][0]])

        if target == "cpu":
            compiled = CompiledKernel(self.fn.__name__, stages, thread())
        else:
            from tilelang.runtime.cuda_build import cuda_build

            text = print_function(replace(function, assume=facts))
            build = cuda_build((text,), thread, target)
            compiled = CompiledKernel(self.fn.__name__, stages, build.thread, build)
        self._compiled[key] = compiled
        return compiled

    def _build(self, constants: dict[str, Any]) -> ir.Function:
        builder = Builder()
        with building(builder):
            env: dict[str, object] = dict(constants)
            tensor_types = {}
            for p in self.params:
                if isinstance(p, TensorParam):
                    tensor_types[p.name] = TensorType(*_resolve(self, p, constants))
            sizes = self._size_vars(builder, tensor_types, constants)
            params = []
            for p in self.params:
                if isinstance(p, ConstexprParam):
                    continue
                builder.reserve(p.name)
                type_ = tensor_types[p.name] if isinstance(p, TensorParam) else ScalarType(p.dtype)
                var = ir.Var(p.name, type_)
                params.append(var)
                env[p.name] = Tensor(var, sizes) if isinstance(p, TensorParam) else Scalar(var)
            for name, size in sizes.items():
                env.setdefault(name, size)
            FunctionCompiler(self.source, env).run_kernel()
            loc, _ = self.source.loc(self.source.tree)
            function = ir.Function(
                name=self.fn.__name__,
                params=tuple(params),
                sizes=tuple(s.value for s in sizes.values()),
                body=_with_grid(builder),
                warps=self._warp_count(constants),
                constexprs=tuple((k, _ir_constant(v)) for k, v in constants.items()),
                loc=loc,
            )
        verify(function)
        return function

    def _size_vars(self, builder: Builder, tensor_types, constants) -> dict[str, Scalar]:
        names = size_symbols([t.shape for t in tensor_types.values()])
        taken = {p.name for p in self.params}
        sizes = {}
        for name in names:
            if name in taken:
                raise TileLangError(
                    f"{self.fn.__name__}: the size name {name} is also a parameter; rename one of them"
                )
            builder.reserve(name)
            sizes[name] = Scalar(ir.Var(name, ScalarType(INDEX)))
        return sizes

    def _warp_count(self, constants: dict[str, Any]) -> int:
        warps = self.warps(**constants) if callable(self.warps) else self.warps
        if not isinstance(warps, int) or not 1 <= warps <= 32:
            raise TileLangError(
                f"{self.fn.__name__}: warps must be an int from 1 to 32, got {warps!r}"
            )
        return warps

    # -- calling -------------------------------------------------------------------------

    def _split_arguments(self, args: tuple, kwargs: dict) -> tuple[dict, dict]:
        runtime = [p for p in self.params if not isinstance(p, ConstexprParam)]
        if len(args) > len(runtime):
            raise TypeError(
                f"{self.fn.__name__}() takes {len(runtime)} tensor and scalar arguments, "
                f"got {len(args)} (pass constexprs by keyword)"
            )
        values = {p.name: a for p, a in zip(runtime, args, strict=False)}
        constexprs = {}
        for name, value in kwargs.items():
            if any(p.name == name for p in runtime):
                if name in values:
                    raise TypeError(f"{self.fn.__name__}() got two values for {name}")
                values[name] = value
            else:
                constexprs[name] = value
        missing = [p.name for p in runtime if p.name not in values]
        if missing:
            raise TypeError(f"{self.fn.__name__}() is missing arguments: {', '.join(missing)}")
        return values, constexprs

    def interpret(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the frontend's block IR on host arrays through the reference interpreter."""
        values, constexprs = self._split_arguments(args, kwargs)
        return self._run(self.specialize(**constexprs), values)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the kernel: on the GPU when the tensors are device arrays (torch, cupy,
        `tilelang.DeviceBuffer`), else on the CPU through the LLVM backend."""
        values, constexprs = self._split_arguments(args, kwargs)
        function = self.specialize(**constexprs)
        tensors = [values[p.name] for p in function.params if isinstance(p.type, TensorType)]
        if any(_on_gpu(t) for t in tensors):
            return self._call_gpu(function, values, constexprs)
        from tilelang.runtime.cpu import compile_cpu  # llvmlite loads only when needed

        bound = bind_arguments(function, values)
        compiled = self.compile(_size_facts(bound.sizes), **constexprs)
        buffers, write_back = byte_buffers(bound.tensors, bound.stored)
        scalars = {**bound.scalars, **bound.sizes}
        compile_cpu(compiled.thread).launch({**buffers, **scalars})
        write_back()
        return self._outputs(values, bound)

    def _call_gpu(self, function: ir.Function, values: dict[str, Any], constexprs) -> Any:
        from tilelang.runtime import gpu
        from tilelang.runtime.arguments import bind_device_arguments
        from tilelang.runtime.cpu import eval_host_expr

        bound = bind_device_arguments(function, values)
        arch = gpu.device_arch()
        compiled = self.compile(_size_facts(bound.sizes), target=arch, **constexprs)
        scalars = {**bound.scalars, **bound.sizes}
        grid = tuple(int(eval_host_expr(g, scalars)) for g in compiled.thread.grid)
        tensors = [values[name] for name in bound.pointers]
        gpu.launch(compiled.cuda, bound.pointers, scalars, grid, gpu.current_stream(tensors))
        outputs = tuple(values[name] for name in bound.stored)
        return outputs[0] if len(outputs) == 1 else (outputs or None)

    def _run(self, function: ir.Function, values: dict[str, Any]) -> Any:
        bound = bind_arguments(function, values)
        interpreter.run(function, bound.tensors, bound.scalars, bound.sizes)
        return self._outputs(values, bound)

    @staticmethod
    def _outputs(values: dict[str, Any], bound: BoundArguments) -> Any:
        for tensor in bound.tensors.values():
            tensor.finish()
        outputs = tuple(values[name] for name in bound.stored)
        return outputs[0] if len(outputs) == 1 else (outputs or None)

    def __repr__(self) -> str:
        return f"<tilelang.kernel {self.fn.__name__}>"


def _on_gpu(value: object) -> bool:
    return hasattr(value, "__cuda_array_interface__")


def _size_facts(sizes: dict[str, int]) -> dict[str, int]:
    """Per size, the largest power of two up to `MAX_SIZE_DIVISOR` that divides it."""
    facts = {}
    for name, size in sizes.items():
        divisor = MAX_SIZE_DIVISOR
        while size % divisor:
            divisor //= 2
        facts[name] = divisor
    return facts


def _with_grid(builder: Builder) -> ir.Block:
    """The kernel body; one without `tl.blocks` runs as a grid of one block."""
    body = builder.finish()
    if any(isinstance(i, ir.Blocks) for i in body.instrs):
        return body
    index = builder.var("bx", ScalarType(INDEX))
    grid = ir.Blocks((index,), (ir.Const(1, INDEX),), loc=ir.NOWHERE)
    return ir.Block((grid, *body.instrs))


def _resolve(kernel: Kernel, param: TensorParam, constants: dict[str, Any]):
    try:
        return resolve_tensor(param, constants)
    except TileLangError as error:
        raise TileLangError(f"{kernel.fn.__name__}: {error.message}") from None


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _ir_constant(value: Any) -> ir.ConstexprValue:
    if isinstance(value, (bool, int, float, str, DType)):
        return value
    return repr(value)


def kernel(fn: Callable | None = None, *, warps: Warps = 4):
    """Decorates a kernel: `@tilelang.kernel` or `@tilelang.kernel(warps=8)`."""
    if fn is None:
        return lambda f: Kernel(f, warps)
    return Kernel(fn, warps)


def func(fn: Callable) -> Func:
    """Decorates a helper that kernels call; it is inlined at each call."""
    return Func(fn)


__all__ = ["CompiledKernel", "Func", "Kernel", "func", "kernel"]
