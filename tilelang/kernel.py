"""`@tilelang.kernel`: the object a decorated kernel becomes, which runs the pipeline.

A `Kernel` reads its parameters once (at decoration), compiles the body to block IR
once per set of compile-time constants (a specialization, cached), checks every
argument of a call before anything runs, and runs the kernel. A call on host arrays
specializes the kernel on what the sizes are divisible by (`Function.assume`), runs the
pass pipeline, lowers to thread IR and runs that through the LLVM CPU backend (the
machine code through the disk cache, `runtime.cpu_build`); a call on GPU arrays builds
for the device's architecture (through the disk cache) and launches there;
`kernel.interpret(...)` runs the frontend's block IR in the reference interpreter.

Every step is cached in memory per specialization and size facts: a warm call checks
its arguments, looks its `CompiledKernel` up and launches — the block IR is not walked
again, the thread IR not re-emitted as LLVM, and a GPU build not read from disk again.
The GPU path imports nothing of the CPU backend (llvmlite).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.printer import print_fact, print_function
from tilelang.ir.thread import ThreadFunction
from tilelang.ir.thread_text import print_thread_function
from tilelang.ir.types import ScalarType, TensorType
from tilelang.ir.verify import verify
from tilelang.lang.builder import Builder, building
from tilelang.lang.errors import TileLangError
from tilelang.lang.frontend import Func, FunctionCompiler, SourceFunction
from tilelang.lang.signature import (
    ConstexprParam,
    ScalarParam,
    TensorParam,
    read_signature,
    resolve_tensor,
    size_symbols,
)
from tilelang.lang.values import INDEX, Scalar, Tensor
from tilelang.pipeline import PIPELINE, lower_function, run_pipeline
from tilelang.runtime import build_log, call_plans, dlpack, gpu, interpreter
from tilelang.runtime.arguments import ArgumentBinder, BoundArguments, dtype_constexpr_note
from tilelang.runtime.buffers import byte_buffers
from tilelang.runtime.cuda_build import CudaBuild, cuda_build
from tilelang.runtime.gpu import typed
from tilelang.runtime.launch_facts import Facts, assumed_facts, launch_facts
from tilelang.runtime.value_facts import check_values, value_facts
from tilelang.runtime.value_facts import forget as forget_facts
from tilelang.runtime.warm_calls import WarmCalls, warm_call
from tilelang.target import CPU, Target
from tilelang.target import target as find_target

if TYPE_CHECKING:
    from tilelang.runtime.cpu_build import CpuBuild

#: What a constexpr whose default is of the type accepts: (as errors say it, types).
_CONSTEXPR_TYPES = {bool: ("a bool", bool), int: ("an int", int), float: ("a number", (int, float))}
Warps = int | Callable[..., int]
#: ``min_blocks``: None, an int, or a function of the constexprs giving one.
MinBlocks = int | Callable[..., int | None] | None
#: ``expect_replicated``: a bool, or a function of the constexprs giving one.
ExpectReplicated = bool | Callable[..., bool]


class CompiledKernel:
    """One specialization, compiled: block IR after every pass, the thread IR and, for a
    GPU target, the CUDA source, PTX, cubin and resources.

    `stats` counts what the lowering selected (mma, ldmatrix, dequantization recipes
    and their scalar fallback, access widths, ...). A GPU build that came from the
    disk cache ran no pass; `stages` then runs them on first use, and `thread` is read
    from the entry on first use. `cpu` is the LLVM-compiled form, built once: for the
    CPU target through the disk cache too (`cpu_build`; a hit loads the stored machine
    code), for a GPU target's thread IR in memory only.
    """

    def __init__(
        self,
        name: str,
        stages: Callable[[], dict[str, ir.Function]],
        thread: Callable[[], ThreadFunction],
        cuda: CudaBuild | None = None,
        cpu_build: CpuBuild | None = None,
    ):
        self.name = name
        self._stages = stages
        self._thread = thread
        self.cuda = cuda
        self.cpu_build = cpu_build

    @functools.cached_property
    def stages(self) -> dict[str, ir.Function]:
        return self._stages()

    @functools.cached_property
    def thread(self) -> ThreadFunction:
        return self._thread()

    @functools.cached_property
    def cpu(self):
        """The thread IR verified, emitted as LLVM IR and JIT-compiled (a
        `tilelang.runtime.cpu.CpuKernel`), once per compiled kernel; for the CPU target,
        the disk cache's machine code when the compile found its entry."""
        if self.cpu_build is not None:
            return self.cpu_build.kernel
        # Deferred: the CPU backend (the LLVM emitter, llvmlite) loads only in a process
        # that runs something on the CPU; the GPU call path never needs it.
        from tilelang.runtime.cpu import compile_cpu

        return compile_cpu(self.thread)

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.thread.stats)

    def _gpu(self, what: str) -> CudaBuild:
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

    @functools.cached_property
    def sass(self) -> str:
        """The cubin disassembled (needs `nvidia-cuda-nvdisasm` or cuobjdump)."""
        from tilelang.runtime.sass import disassemble  # a tool run, on first use only

        return disassemble(self._gpu("SASS").cubin)

    def perf(
        self,
        *,
        per: str | None = None,
        latency_ns: float | None = None,
        iterations: int | None = None,
        **launch: Any,
    ):
        """A static performance report of this GPU build at one launch: a prediction from
        its SASS, resources and block IR, not a measurement (no GPU needed).

        `launch`: every size and the scalar parameters the grid or the main loop's
        bounds use, by name (`perf(M=1, K=8192, N=28672, per="w")`); the sizes must
        satisfy the facts the kernel was compiled for (`compile(assume=...)`). `per`:
        a tensor the main loop loads, whose elements the headline counts instructions
        per. `latency_ns` replaces the card's assumed DRAM latency. `iterations`: the
        main loop's trip count per block, for a loop whose bounds the kernel reads from
        a tensor at run time (a sequence length, a block table). Returns a
        `tilelang.runtime.perf.PerfReport`: `str()` is the text, `.to_dict()` the data;
        the model is in that module's docstring. Needs a SASS disassembler
        (`nvidia-cuda-nvdisasm`) and a target with hardware facts (`tilelang.target`).
        """
        # Deferred: only a process that asks for a report loads the model.
        from tilelang.runtime.perf import perf_report

        build = self._gpu("a performance report")
        return perf_report(
            function=self.stages[PIPELINE[-1][0]],
            thread=self.thread,
            cubin=build.cubin,
            resources=build.resources,
            target=build.arch,
            launch=launch,
            per=per,
            latency_ns=latency_ns,
            iterations=iterations,
        )

    def ir(self, stage: str = "lower") -> str:
        """The IR after `stage` (a pass name, "frontend", or "lower" for the thread IR)."""
        if stage == "lower":
            return print_thread_function(self.thread)
        if stage not in self.stages:
            names = ", ".join((*self.stages, "lower"))
            raise ValueError(f"no IR stage {stage!r}; the stages are {names}")
        return print_function(self.stages[stage])


class Specialization:
    """A kernel at one set of compile-time constants: its block IR, and what every call
    of it reuses (its argument checks prepared, its IR text for cache keys, the pass
    results and compiled kernels per size facts and target)."""

    def __init__(self, function: ir.Function, min_blocks: int | None = None) -> None:
        self.function = function
        self.min_blocks = min_blocks  # the CUDA build's __launch_bounds__ minimum blocks
        self.arguments = ArgumentBinder(function)
        self.tensors = tuple(p.name for p in function.params if isinstance(p.type, TensorType))
        self.names = frozenset(p.name for p in function.params)  # every runtime parameter
        self.stages: dict[tuple[Facts, str], dict[str, ir.Function]] = {}
        self.compiled: dict[tuple[Facts, str], CompiledKernel] = {}

    @functools.cached_property
    def text(self) -> str:
        """The frontend IR as text, without size facts (the disk cache key's core)."""
        return print_function(self.function)

    def key_text(self, facts: Facts) -> str:
        """The frontend IR text with `facts` (what `print_function` shows as `assume`)."""
        tensors = set(self.tensors)
        shown = (print_fact(n, d, n in tensors) for n, d in facts)
        return self.text + "\nassume " + ", ".join(shown)

    @functools.cached_property
    def tensor_types(self) -> dict[str, DType]:
        """Each tensor parameter's dtype, by name (what a "finite" fact may name)."""
        return {
            p.name: p.type.dtype for p in self.function.params if isinstance(p.type, TensorType)
        }


class Kernel:
    def __init__(
        self,
        fn: Callable,
        warps: Warps = 4,
        min_blocks: MinBlocks = None,
        expect_replicated: ExpectReplicated = False,
    ):
        self.fn = fn
        self.warps = warps
        self.min_blocks = min_blocks
        self.expect_replicated = expect_replicated
        self.params = read_signature(fn)
        self._constexprs = {p.name: p for p in self.params if isinstance(p, ConstexprParam)}
        self._runtime = tuple(p.name for p in self.params if not isinstance(p, ConstexprParam))
        self._scalar_defaults = {
            p.name: p.default for p in self.params if isinstance(p, ScalarParam) and not p.required
        }
        self._warm_calls = WarmCalls(self._runtime)
        self._source: SourceFunction | None = None
        self._specializations: dict[tuple, Specialization] = {}
        self._given: dict[tuple, Specialization] = {}  # by constexprs as a call gives them
        functools.update_wrapper(self, fn)

    @property
    def source(self) -> SourceFunction:
        if self._source is None:
            self._source = SourceFunction.of(self.fn)
        return self._source

    # -- compile-time constants ----------------------------------------------------------

    def constants(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The values of every constexpr parameter: defaults, then `overrides`. numpy
        scalars become the equal Python values (`np.int64(64)` is 64, `np.bool_` a bool),
        so they build the same block IR and the same cache keys."""
        declared = self._constexprs
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
                values[name] = self._checked_constexpr(param, _python_value(overrides[name]))
            elif param.required:
                raise TypeError(f"{self.fn.__name__}(): constexpr parameter {name} needs a value")
            else:
                values[name] = _python_value(param.default)
        return values

    def _checked_constexpr(self, param: ConstexprParam, value: Any) -> Any:
        """`value` (numpy scalars already Python's) checked against the type of the
        constexpr's default (int, float, bool or dtype) at the call, which can name the
        parameter. Ints pass for a float default; a dtype may be a name ("f16")."""
        kind, default, why = type(param.default), param.default, ""
        if kind in _CONSTEXPR_TYPES:
            expected, accepted = _CONSTEXPR_TYPES[kind]
            if isinstance(value, accepted) and isinstance(value, bool) == (kind is bool):
                return value
        elif isinstance(default, DType) and not isinstance(value, DType):
            expected = "a dtype or a dtype name"
            if not isinstance(value, (int, float)):  # bools are ints; no number names a dtype
                try:
                    return dtypes.dtype(value)
                except (TypeError, ValueError) as error:
                    why = f": {error}"
        else:
            return value
        got = type(value).__name__
        raise TypeError(
            f"{self.fn.__name__}(): constexpr parameter {param.name} expects {expected} (its "
            f"default is {default}), got {value!r} ({'an' if got[0] in 'aeiou' else 'a'} {got})"
            + why
        )

    def specialization(self, **constexprs: Any) -> Specialization:
        """The specialization for the given compile-time constants (cached; a warm call
        finds it by the constants as given, before defaults and normalization)."""
        try:  # typed: 32.0 and True must not find the builds of 32 and 1
            given = tuple((k, typed(v)) for k, v in constexprs.items())
            found = self._given.get(given)
        except TypeError:  # an unhashable value (a list): looked up the long way
            given, found = None, None
        if found is not None:
            return found
        constants = self.constants(constexprs)
        key = tuple((k, typed(v)) for k, v in sorted(constants.items()))
        found = self._specializations.get(key)
        if found is None:
            count = self._min_block_count(constants)
            function = _with_block_attrs(
                self._build(constants),
                min_blocks=count,
                expect_replicated=self._expects_replicated(constants),
            )
            found = self._specializations[key] = Specialization(function, count)
        if given is not None:
            self._given[given] = found
        return found

    def specialize(self, **constexprs: Any) -> ir.Function:
        """The block IR of this kernel for the given compile-time constants (cached)."""
        return self.specialization(**constexprs).function

    def stages(
        self,
        assume: Mapping[str, int] | str | None = "all",
        *,
        target: str | Target = "cpu",
        **constexprs: Any,
    ) -> dict[str, ir.Function]:
        """The block IR after the frontend and after each pass, by name (cached).

        `assume` as `compile` takes it, with its default ("all": every size a multiple
        of 128), so the IR shown is the IR a default build runs; `None` assumes nothing
        (a launch derives its facts from the actual sizes). `target`: whose limits the
        planning passes check.
        """
        chosen = find_target(target)
        spec = self.specialization(**constexprs)
        return self._stages(spec, assumed_facts(spec.function, assume), chosen)

    def _stages(self, spec: Specialization, facts: Facts, target: Target) -> dict[str, ir.Function]:
        key = (facts, target.name)
        if key not in spec.stages:
            spec.stages[key] = run_pipeline(replace(spec.function, assume=facts), target)
        return spec.stages[key]

    def ir(self, stage: str = "frontend", assume: object = "all", **constexprs: Any) -> str:
        """The block IR as text, as the frontend made it or after the pass `stage`, under
        `assume` as `stages` takes it."""
        stages = self.stages(assume, **constexprs)
        if stage not in stages:
            raise ValueError(f"no IR stage {stage!r}; the stages are {', '.join(stages)}")
        return print_function(stages[stage])

    def compile(
        self,
        assume: Mapping[str, int] | str | None = "all",
        target: str | Target = "cpu",
        **constexprs: Any,
    ) -> CompiledKernel:
        """Compiles one specialization (cached in memory; GPU builds also on disk).

        `assume`: a dict of size name -> power-of-two divisor, `None` for no facts, or
        "all" (the default): every size a multiple of 128, as sizes of real models are.
        A tensor name -> a power of two b states a value fact: every element of that
        tensor is +0 or positive and below b (`tilelang.analysis.value_bounds`; a call
        states it with `assume=` too, and checks it on the arrays before running);
        tensor name -> "finite": no element of that float tensor is inf or NaN. Value
        facts do not change the size facts: a dict of value facts alone keeps the
        default "all" for the sizes; with no size facts, map the sizes to 1 (a size
        multiple of 1: nothing known), e.g. ``{"M": 1, "N": 1, "s": 16}``.
        `target`: "cpu" (thread IR for the LLVM backend) or a GPU architecture such as
        "sm_80" or "sm_90a" (CUDA source, PTX, cubin; no GPU needed); see
        `tilelang.target.TARGETS`.
        """
        chosen = find_target(target)
        spec = self.specialization(**constexprs)
        return self._compile(spec, assumed_facts(spec.function, assume), chosen)

    def _compile(self, spec: Specialization, facts: Facts, target: Target) -> CompiledKernel:
        compiled = spec.compiled.get((facts, target.name))
        if compiled is None:
            compiled = self._new_compiled(spec, facts, target)
            spec.compiled[facts, target.name] = compiled
        return compiled

    def _new_compiled(self, spec: Specialization, facts: Facts, target: Target) -> CompiledKernel:
        def stages() -> dict[str, ir.Function]:
            return self._stages(spec, facts, target)

        def thread() -> ThreadFunction:
            return lower_function(stages()[PIPELINE[-1][0]], target)

        def built_stages() -> dict[str, ir.Function]:
            # `.stages` of a build that gave the passes' warnings already (it ran them, or
            # a disk-cache hit replayed them): running the passes now must not repeat them.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return stages()

        if not target.is_gpu:
            # Deferred, as in `CompiledKernel.cpu`: the GPU path never loads LLVM.
            from tilelang.runtime.cpu_build import cpu_build

            # Found on disk, or lowered now: a kernel that cannot be lowered fails at
            # compile. min_blocks is a CUDA launch bound: the CPU build ignores it.
            cpu = cpu_build((spec.key_text(facts),), thread, label=self._label(spec))
            return CompiledKernel(self.fn.__name__, built_stages, lambda: cpu.thread, cpu_build=cpu)
        key = (spec.key_text(facts),)
        if spec.min_blocks is not None:
            key += (f"min_blocks {spec.min_blocks}",)
        label = self._label(spec)
        build = cuda_build(key, thread, target.arch, min_blocks=spec.min_blocks, label=label)
        return CompiledKernel(self.fn.__name__, built_stages, lambda: build.thread, build)

    def _label(self, spec: Specialization) -> str:
        """The kernel and its constexprs, as the build log names a build."""
        return build_log.describe(self.fn.__name__, spec.function.constexprs)

    def _build(self, constants: dict[str, Any]) -> ir.Function:
        builder = Builder(warps=self._warp_count(constants))
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
                warps=builder.warps,
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

    def _min_block_count(self, constants: dict[str, Any]) -> int | None:
        given = self.min_blocks
        count = given(**constants) if callable(given) else given
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 32
        ):
            raise TileLangError(
                f"{self.fn.__name__}: min_blocks must be None or an int from 1 to 32 "
                f"(blocks per multiprocessor), got {count!r}"
            )
        return count

    def _expects_replicated(self, constants: dict[str, Any]) -> bool:
        given = self.expect_replicated
        expects = given(**constants) if callable(given) else given
        if not isinstance(expects, bool):
            raise TileLangError(
                f"{self.fn.__name__}: expect_replicated must give True or False, got {expects!r}"
            )
        return expects

    def _warp_count(self, constants: dict[str, Any]) -> int:
        warps = self.warps(**constants) if callable(self.warps) else self.warps
        if not isinstance(warps, int) or not 1 <= warps <= 32:
            raise TileLangError(
                f"{self.fn.__name__}: warps must be an int from 1 to 32, got {warps!r}"
            )
        return warps

    # -- calling -------------------------------------------------------------------------

    def _split_arguments(self, args: tuple, kwargs: dict) -> tuple[dict, dict]:
        runtime = self._runtime
        if len(args) > len(runtime):
            raise TypeError(
                f"{self.fn.__name__}() takes {len(runtime)} tensor and scalar arguments, "
                f"got {len(args)} (pass constexprs by keyword)"
            )
        values = dict(zip(runtime, args, strict=False))
        constexprs = {}
        for name, value in kwargs.items():
            if name in runtime:
                if name in values:
                    raise TypeError(f"{self.fn.__name__}() got two values for {name}")
                values[name] = value
            else:
                constexprs[name] = value
        if len(values) < len(runtime):
            values.update((n, d) for n, d in self._scalar_defaults.items() if n not in values)
        if len(values) < len(runtime):
            missing = [name for name in runtime if name not in values]
            raise TypeError(f"{self.fn.__name__}() is missing arguments: {', '.join(missing)}")
        return values, constexprs

    def interpret(self, *args: Any, assume: Mapping[str, int] | None = None, **kwargs: Any) -> Any:
        """Runs the frontend's block IR on host arrays through the reference interpreter
        (`assume`: value facts, checked as a call checks them)."""
        values, constexprs = self._split_arguments(args, kwargs)
        spec = self.specialization(**constexprs)
        check_values(value_facts(self.fn.__name__, spec.tensors, assume, spec.tensor_types), values)
        forget_facts(values[name] for name in spec.arguments.stored)  # about to be written
        bound = spec.arguments.bind(_imported(values, spec))
        interpreter.run(spec.function, bound.tensors, bound.scalars, bound.sizes)
        return self._outputs(values, bound)

    def __call__(self, *args: Any, assume: Mapping[str, int] | None = None, **kwargs: Any) -> Any:
        """Runs the kernel: on the GPU when the tensors are device arrays (torch, cupy,
        `tilelang.DeviceBuffer`), else on the CPU through the LLVM backend.

        `assume`: value facts, tensor name -> a power of two b: every element of that
        tensor is +0 or positive and below b, or -> "finite": no element of that float
        tensor is inf or NaN; the kernel is specialized on them and they
        are checked on the arrays before anything runs (`tilelang.runtime.value_facts`)."""
        warm = self._warm_calls.signature(args, kwargs, assume)
        if warm is not None:
            found = self._warm_calls.get(warm[0])
            if found is not None:
                launched, result = found(args, warm[1])
                if launched:
                    return result
        values, constexprs = self._split_arguments(args, kwargs)
        spec = self.specialization(**constexprs)
        try:
            return self.run(spec, values, assume, warm and warm[0])
        except TypeError as error:  # a dtype a dtype constexpr set: say which, and how
            annotated = {
                p.name: p.annotation.dtype
                for p in self.params
                if isinstance(p, TensorParam) and isinstance(p.annotation.dtype, str)
            }
            note = dtype_constexpr_note(annotated, values, spec.tensor_types, constexprs)
            if not note:
                raise
            raise TypeError(f"{error}{note}").with_traceback(error.__traceback__) from None

    def run(
        self,
        spec: Specialization,
        values: dict[str, Any],
        assume: Mapping[str, int] | None = None,
        warm_key: tuple | None = None,
    ) -> Any:
        """A call of `spec` (one of this kernel's specializations) with every runtime
        argument by name: what `__call__` does once it has found the specialization, for
        callers that already hold it (`tilelang.torch`'s operators). `warm_key`: the
        call's `WarmCalls` key, under which a GPU launch leaves what it worked out."""
        if values.keys() != spec.names:
            missing = sorted(spec.names - values.keys())
            extra = sorted(values.keys() - spec.names)
            raise TypeError(
                f"{self.fn.__name__}(): run() takes every runtime argument by name; "
                f"missing {missing}, unexpected {extra}"
            )
        stated = value_facts(self.fn.__name__, spec.tensors, assume, spec.tensor_types)
        check_values(stated, values)
        forget_facts(values[name] for name in spec.arguments.stored)  # about to be written
        arguments = _imported(values, spec)
        if any(_on_gpu(arguments[name]) for name in spec.tensors):
            return self._call_gpu(spec, arguments, values, stated, warm_key)
        bound = spec.arguments.bind(arguments)
        compiled = self._compile(spec, launch_facts(bound.sizes, stated), CPU)
        buffers, write_back = byte_buffers(bound.tensors, bound.stored)
        compiled.cpu.launch({**buffers, **bound.scalars, **bound.sizes})
        write_back()
        return self._outputs(values, bound)

    def _call_gpu(
        self,
        spec: Specialization,
        values: dict[str, Any],
        given: dict[str, Any],
        stated: Facts,
        warm_key: tuple | None,
    ) -> Any:
        bound = spec.arguments.bind_device(values)
        target = find_target(gpu.device_arch())
        compiled = self._compile(spec, launch_facts(bound.sizes, stated), target)
        scalars = {**bound.scalars, **bound.sizes}
        grid = compiled.cuda.launcher.grid(scalars)
        tensors = [values[name] for name in bound.pointers]
        stream = gpu.current_stream(tensors)
        call_plans.launch(compiled.cuda, bound.pointers, scalars, grid, stream, bound.stored)
        if warm_key is not None:
            warm = warm_call(self._runtime, compiled.cuda, values, bound, scalars, grid, stated)
            self._warm_calls.remember(warm_key, warm)
        outputs = tuple(given[name] for name in bound.stored)
        return outputs[0] if len(outputs) == 1 else (outputs or None)

    @staticmethod
    def _outputs(values: dict[str, Any], bound: BoundArguments) -> Any:
        for tensor in bound.tensors.values():
            tensor.finish()
        outputs = tuple(values[name] for name in bound.stored)
        return outputs[0] if len(outputs) == 1 else (outputs or None)

    def __repr__(self) -> str:
        return f"<tilelang.kernel {self.fn.__name__}>"


def _imported(values: dict[str, Any], spec: Specialization) -> dict[str, Any]:
    """The values with other libraries' tensors read through DLPack (`runtime.dlpack`):
    zero-copy views the argument checks and launches take; the caller's objects are
    what a call returns."""
    arguments = values
    for name in spec.tensors:
        value = values[name]
        found = dlpack.imported(value)
        if found is not value:
            if arguments is values:
                arguments = dict(values)
            arguments[name] = found
    return arguments


def _on_gpu(value: object) -> bool:
    return hasattr(value, "__cuda_array_interface__")


def host_target() -> Target:
    """The target a call on host arrays compiles for (the CPU backend runs it)."""
    return CPU


def _with_grid(builder: Builder) -> ir.Block:
    """The kernel body; one without `tl.blocks` runs as a grid of one block."""
    body = builder.finish()
    if any(isinstance(i, ir.Blocks) for i in body.instrs):
        return body
    index = builder.var("bx", ScalarType(INDEX))
    grid = ir.Blocks((index,), (ir.Const(1, INDEX),), loc=ir.NOWHERE)
    return ir.Block((grid, *body.instrs))


def _with_block_attrs(function: ir.Function, **attrs: int | bool | None) -> ir.Function:
    """`function` with `attrs` on its blocks instruction, those that are set (not None or
    False): ``min_blocks`` (the register budget reads it, `passes.register_budget`) and
    ``expect_replicated`` (`analysis.replication` warns nothing)."""
    given = {
        name: value for name, value in attrs.items() if value is not None and value is not False
    }
    if not given:
        return function
    instrs = tuple(
        i.with_attrs(**given) if isinstance(i, ir.Blocks) else i for i in function.body.instrs
    )
    return replace(function, body=ir.Block(instrs))


def _resolve(kernel: Kernel, param: TensorParam, constants: dict[str, Any]):
    try:
        return resolve_tensor(param, constants)
    except TileLangError as error:
        raise TileLangError(f"{kernel.fn.__name__}: {error.message}") from None


def _python_value(value: Any) -> Any:
    """numpy scalars as the equal Python values (inside lists and tuples too)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if type(value) in (list, tuple):  # not a namedtuple: its constructor differs
        return type(value)(_python_value(v) for v in value)
    return value


def _ir_constant(value: Any) -> ir.ConstexprValue:
    if isinstance(value, (bool, int, float, str, DType)):
        return value
    return repr(value)


def kernel(
    fn: Callable | None = None,
    *,
    warps: Warps = 4,
    min_blocks: MinBlocks = None,
    expect_replicated: ExpectReplicated = False,
):
    """Decorates a kernel: `@tilelang.kernel` or `@tilelang.kernel(warps=8)`.

    `warps` (or a function of the constexprs giving it): warps per block. `min_blocks`
    (or a function of the constexprs): the blocks each multiprocessor must be able to
    hold at once, CUDA's ``__launch_bounds__(threads, min_blocks)`` — ptxas then may
    use up to 65536 / (min_blocks · threads) registers a thread (at most 255), and
    only then. None (the default) states nothing, and ptxas may cap registers below
    255 to fit more blocks, spilling to do so; ``min_blocks=1`` lets a kernel that needs
    many registers have them all. `expect_replicated` (or a function of the constexprs
    giving it, for the builds that do): the kernel's tiles hold a dot operand whole in
    several warps by design (a 1 x N warp grid that converts each weight once), so no
    `ReplicatedOperandWarning` is given; `kernel.stats` still counts such operands."""
    if not isinstance(expect_replicated, bool) and not callable(expect_replicated):
        raise TypeError(
            f"expect_replicated must be True, False or a function of the constexprs, "
            f"got {expect_replicated!r}"
        )
    if fn is None:
        return lambda f: Kernel(f, warps, min_blocks, expect_replicated)
    return Kernel(fn, warps, min_blocks, expect_replicated)


def func(fn: Callable) -> Func:
    """Decorates a helper that kernels call; it is inlined at each call."""
    return Func(fn)


__all__ = ["CompiledKernel", "Func", "Kernel", "Specialization", "func", "kernel"]
