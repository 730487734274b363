"""A kernel's parameters, read from its Python annotations.

- `x: tl.Tensor[f16, "M", "K"]` — a global tensor; each dimension is an int, a size
  name bound at launch, or an expression of names (checked at launch). The dtype may be
  the name of a compile-time constant (`tl.Tensor["WT", "K", "N"]`).
- `alpha: tl.f32` — a runtime scalar of that dtype.
- `BM: tl.constexpr = 64` — a compile-time constant; the kernel is specialized on it.

A size expression that does not parse is reported by `read_signature` (at decoration),
naming the kernel, the parameter and the expression: Python evaluates annotations when
the `def` statement runs, before the decorator has the function, so `Tensor[...]`
records the mistake instead of raising it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir.shape_expr import ShapeExpr, ShapeExprError, parse_shape_expr, substitute, symbols
from tilelang.lang.errors import TileLangError


class constexpr:
    """Annotation of a compile-time constant parameter."""


@dataclass(frozen=True)
class TensorAnnotation:
    """What `Tensor[dtype, dim, ...]` evaluates to. `error` says why a size expression did
    not parse (then `dims` is empty); `read_signature` reports it with the kernel's and
    the parameter's names."""

    dtype: DType | str
    dims: tuple[ShapeExpr, ...]
    error: str | None = None

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Tensor[{self.dtype}, <{self.error}>]"
        dims = ", ".join(repr(str(d)) for d in self.dims)
        return f"Tensor[{self.dtype}, {dims}]"


class Tensor:
    """`Tensor[dtype, dim, ...]`: the annotation of a global tensor parameter."""

    def __class_getitem__(cls, params) -> TensorAnnotation:
        if not isinstance(params, tuple) or len(params) < 2:
            raise TypeError(
                'write a tensor annotation as Tensor[dtype, dim, ...], e.g. Tensor[f16, "M", "K"]'
            )
        dtype, *dims = params
        if not isinstance(dtype, (DType, str)):
            raise TypeError(
                f"the dtype of a Tensor annotation must be a dtype or a constexpr name, got {dtype!r}"
            )
        if isinstance(dtype, str):
            dtype = _dtype_or_name(dtype)
        try:
            parsed = tuple(parse_shape_expr(d) for d in dims)
        except ShapeExprError as error:
            return TensorAnnotation(dtype, (), str(error))
        return TensorAnnotation(dtype, parsed)


def _dtype_or_name(text: str) -> DType | str:
    try:
        return dtypes.dtype(text)
    except ValueError:
        return text  # the name of a constexpr parameter holding the dtype


@dataclass(frozen=True)
class TensorParam:
    name: str
    annotation: TensorAnnotation


@dataclass(frozen=True)
class ScalarParam:
    name: str
    dtype: DType
    default: object = inspect.Parameter.empty  # what a call that leaves it out passes

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class ConstexprParam:
    name: str
    default: object = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


Param = TensorParam | ScalarParam | ConstexprParam


def read_signature(fn) -> tuple[Param, ...]:
    """The kernel's parameters; a missing or unknown annotation is a TileLangError."""
    try:
        annotations = inspect.get_annotations(fn, eval_str=True)
    except Exception as error:  # the user's annotation text failed to evaluate
        raise TileLangError(f"cannot evaluate the annotations of {fn.__name__}: {error}") from None
    params = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise TileLangError(
                f"{fn.__name__}: parameter {p.name} must be a plain named parameter"
            )
        params.append(_param(fn, p, annotations.get(p.name, inspect.Parameter.empty)))
    _check_tensor_dtype_names(fn, params)
    return tuple(params)


def _param(fn, p: inspect.Parameter, annotation: object) -> Param:
    if isinstance(annotation, TensorAnnotation):
        if p.default is not inspect.Parameter.empty:
            raise TileLangError(
                f"{fn.__name__}: tensor parameter {p.name} cannot have a default value "
                f"(got {p.default!r}); every call passes its tensors"
            )
        if annotation.error is not None:
            raise TileLangError(
                f"{fn.__name__}: the annotation of tensor parameter {p.name} has a bad size: "
                f"{annotation.error}"
            )
        return TensorParam(p.name, annotation)
    if annotation is constexpr:
        return ConstexprParam(p.name, p.default)
    if isinstance(annotation, DType):
        return ScalarParam(p.name, annotation, p.default)
    raise TileLangError(
        f"{fn.__name__}: parameter {p.name} needs an annotation: tl.Tensor[dtype, dims...] for a "
        f"tensor, a dtype such as tl.i32 for a runtime scalar, or tl.constexpr; got {annotation!r}"
    )


def _check_tensor_dtype_names(fn, params: list[Param]) -> None:
    constexpr_names = {p.name for p in params if isinstance(p, ConstexprParam)}
    for p in params:
        if (
            isinstance(p, TensorParam)
            and isinstance(p.annotation.dtype, str)
            and p.annotation.dtype not in constexpr_names
        ):
            raise TileLangError(
                f"{fn.__name__}: the dtype {p.annotation.dtype!r} of tensor {p.name} is neither a "
                "dtype name nor a tl.constexpr parameter"
            )


def resolve_tensor(
    param: TensorParam, constants: dict[str, object]
) -> tuple[DType, tuple[ShapeExpr, ...]]:
    """The tensor's dtype and dims with compile-time constants substituted."""
    dtype = param.annotation.dtype
    if isinstance(dtype, str):
        value = constants[dtype]
        try:
            dtype = dtypes.dtype(value)
        except (ValueError, TypeError):
            raise TileLangError(
                f"constexpr {param.annotation.dtype} gives the dtype of {param.name}, but is {value!r}"
            ) from None
    ints = {k: v for k, v in constants.items() if isinstance(v, int) and not isinstance(v, bool)}
    return dtype, tuple(substitute(d, ints) for d in param.annotation.dims)


def size_symbols(dims_of_tensors: list[tuple[ShapeExpr, ...]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for dims in dims_of_tensors:
        for d in dims:
            seen.update(dict.fromkeys(symbols(d)))
    return tuple(seen)
