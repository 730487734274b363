"""The C interface of one compiled kernel: what its launcher takes and checks.

`KernelInterface.of(name, function, thread)` reads it from the kernel's block IR (the
user's parameters in declaration order, the size symbols, the size facts it was
compiled for) and its thread IR (parameter order of both backends' ABIs, the grid,
the launch checks, threads, shared memory). It is the one description the C header,
the GPU and CPU launchers and `manifest.json` are all generated from, so the three
cannot disagree about an argument. The source locations its messages carry (the
`tl.blocks` line, the launch checks') are made portable (`portable_path`: relative to
the current directory, or the file's name), so the files name no path of the machine
that built them; the grid's expressions are read from the `tl.blocks` line first
(`grid_sources`), for the messages of a grid too large.

The C entry point (`prototype`) takes the stream first, then each parameter in
declaration order: a tensor as its data pointer (``const void *`` when the kernel
only reads it) followed by ``const int64_t *NAME_shape`` (one entry per dimension);
a scalar by value (`C_SCALAR_TYPES`; f16/bf16 as their 16-bit code). Sizes are not
arguments: they are read from the shapes, as a Python call reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from tilelang.aot.c_expr import AotError
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.core import FINITE
from tilelang.ir.shape_expr import ShapeExpr, Sym
from tilelang.ir.types import TensorType
from tilelang.runtime.grid_limits import grid_sources

#: The C type a scalar parameter of each dtype is passed as.
C_SCALAR_TYPES = {
    "u1": "uint8_t",
    "i8": "int8_t",
    "i16": "int16_t",
    "i32": "int32_t",
    "i64": "int64_t",
    "u8": "uint8_t",
    "u16": "uint16_t",
    "u32": "uint32_t",
    "u64": "uint64_t",
    "f16": "uint16_t",
    "bf16": "uint16_t",
    "f32": "float",
    "f64": "double",
}

_C_KEYWORDS = frozenset(
    """auto break case char const continue default do double else enum extern float for
    goto if inline int long register restrict return short signed sizeof static struct
    switch typedef union unsigned void volatile while stream bool true false""".split()  # noqa: SIM905
)
_C_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def c_identifier(name: str, what: str) -> str:
    """`name` as a C identifier, or an `AotError` naming `what`."""
    if not _C_NAME.fullmatch(name) or not name.isascii():
        raise AotError(f"{what} {name!r} is not a C identifier")
    return name + "_" if name in _C_KEYWORDS or name.startswith("tl_") else name


@dataclass(frozen=True)
class TensorArg:
    name: str  # the parameter's name
    c_name: str  # its C parameter name (the shape is c_name + "_shape")
    dtype: DType
    shape: tuple[ShapeExpr, ...]
    stored: bool  # the kernel writes it (its pointer is not const)


@dataclass(frozen=True)
class ScalarArg:
    name: str
    c_name: str
    dtype: DType

    @property
    def c_type(self) -> str:
        return C_SCALAR_TYPES[self.dtype.name]


@dataclass(frozen=True)
class KernelInterface:
    name: str  # the C prefix: the entry point, NAME_error_string, ...
    kernel: str  # the Python kernel's name
    args: tuple[TensorArg | ScalarArg, ...]  # in declaration order
    size_reads: tuple[tuple[str, str, int], ...]  # (size, tensor, axis) it is read from
    shape_checks: tuple[tuple[str, int, ShapeExpr], ...]  # (tensor, axis, rule)
    facts: tuple[tuple[str, int], ...]  # (size, divisor) the build assumed
    values: tuple[tuple[str, int], ...]  # (tensor, b): 0 <= its values < b, assumed
    thread: t.ThreadFunction  # its source paths portable (`portable_thread`)
    grid_sources: tuple[str, str, str]  # each grid dimension as tl.blocks writes it

    @classmethod
    def of(cls, name: str, function: ir.Function, thread: t.ThreadFunction) -> KernelInterface:
        c_identifier(name, "--name")
        sources = grid_sources(thread)  # read while the paths still lead to the file
        stored = t.written_tensors(thread.body)
        args: list[TensorArg | ScalarArg] = []
        for param in function.params:
            c_name = c_identifier(param.name, f"{function.name}(): parameter")
            if isinstance(param.type, TensorType):
                shape = tuple(param.type.shape)
                args.append(
                    TensorArg(param.name, c_name, param.type.dtype, shape, param.name in stored)
                )
            else:
                dtype = param.type.dtype
                if dtype.name not in C_SCALAR_TYPES:
                    raise AotError(
                        f"{function.name}(): scalar parameter {param.name!r} of dtype {dtype} has no C type"
                    )
                args.append(ScalarArg(param.name, c_name, dtype))
        reads: dict[str, tuple[str, int]] = {}
        checks = []
        for arg in args:
            if isinstance(arg, TensorArg):
                for axis, rule in enumerate(arg.shape):
                    if isinstance(rule, Sym) and rule.name not in reads:
                        reads[rule.name] = (arg.name, axis)
                    else:
                        checks.append((arg.name, axis, rule))
        for size in function.sizes:
            if size.name not in reads:
                raise AotError(
                    f"{function.name}(): size {size.name} is not the whole size of any tensor dimension"
                )
        finite = [n for n, b in function.assume if b == FINITE]
        if finite:  # the C launchers check bounds only
            raise AotError(
                f"{function.name}(): an ahead-of-time build cannot assume {finite[0]!r} finite "
                "yet; compile without that value fact"
            )
        return cls(
            name=name,
            kernel=function.name,
            args=tuple(args),
            size_reads=tuple((s, p, a) for s, (p, a) in reads.items()),
            shape_checks=tuple(checks),
            # A divisor of 1 is no fact (a build with value facts only states them).
            facts=tuple((n, d) for n, d in function.assume if n in reads and d > 1),
            values=tuple((n, b) for n, b in function.assume if n not in reads),
            thread=portable_thread(thread),
            grid_sources=sources,
        )

    @property
    def tensors(self) -> tuple[TensorArg, ...]:
        return tuple(a for a in self.args if isinstance(a, TensorArg))

    @property
    def scalars(self) -> tuple[ScalarArg, ...]:
        return tuple(a for a in self.args if isinstance(a, ScalarArg))

    def tensor(self, name: str) -> TensorArg:
        return next(a for a in self.tensors if a.name == name)

    def prototype(self) -> str:
        """The C declaration of the entry point (without the semicolon)."""
        return f"int {self.name}({self.parameter_list()})"

    def parameter_list(self) -> str:
        """The entry point's parameters as C declarations, comma-separated."""
        parts = ["void *stream"]
        for arg in self.args:
            if isinstance(arg, TensorArg):
                const = "" if arg.stored else "const "
                parts += [f"{const}void *{arg.c_name}", f"const int64_t *{arg.c_name}_shape"]
            else:
                parts.append(f"{arg.c_type} {arg.c_name}")
        return ", ".join(parts)

    def call_arguments(self) -> str:
        """The entry point's parameter names, comma-separated (for forwarding calls)."""
        names = ["stream"]
        for arg in self.args:
            names += (
                [arg.c_name, f"{arg.c_name}_shape"] if isinstance(arg, TensorArg) else [arg.c_name]
            )
        return ", ".join(names)

    def signature(self) -> list[dict]:
        """The parameters as data (for manifest.json)."""
        out = []
        for arg in self.args:
            if isinstance(arg, TensorArg):
                out.append(
                    {
                        "name": arg.name,
                        "kind": "tensor",
                        "dtype": arg.dtype.name,
                        "shape": [str(d) for d in arg.shape],
                        "written": arg.stored,
                    }
                )
            else:
                out.append(
                    {
                        "name": arg.name,
                        "kind": "scalar",
                        "dtype": arg.dtype.name,
                        "c_type": arg.c_type,
                    }
                )
        return out


# --------------------------------------------------------------------------- portable paths

_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): ")


def portable_path(path: str) -> str:
    """`path` as a generated file may name it: relative to the current directory when
    the file is inside it, else the file's name; so that two checkouts of a project
    build the same bytes (an absolute path named the builder's machine)."""
    given = Path(path)
    if not given.is_absolute():
        return path
    here = Path.cwd()
    for candidate in (given, given.resolve()):
        if candidate.is_relative_to(here):
            return candidate.relative_to(here).as_posix()
    return given.name


def portable_thread(thread: t.ThreadFunction) -> t.ThreadFunction:
    """`thread` with the source paths the launch's messages name made portable: the
    `tl.blocks` line (`grid_at`, "FILE:LINE") and the "FILE:LINE:COL: " each launch
    check's message starts with."""
    file, sep, line = thread.grid_at.rpartition(":")
    grid_at = f"{portable_path(file)}{sep}{line}" if sep else thread.grid_at
    checks = tuple((condition, _portable_message(text)) for condition, text in thread.checks)
    return replace(thread, grid_at=grid_at, checks=checks)


def _portable_message(text: str) -> str:
    found = _LOCATED.match(text)
    if found is None:
        return text
    return portable_path(found["file"]) + text[found.end("file") :]
