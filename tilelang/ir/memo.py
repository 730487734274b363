"""Remembered hashes and attributes of the IR's frozen values (`Var`, the types, layouts).

The passes keep values, types and layouts in dicts and sets, and a dataclass's generated
`__hash__` hashes every field again on each use: a `Var` hashes its name and its type,
the type its dtype, shape and layout, the layout its modes. Profiles of the compiler
showed a tenth of the register estimate, and more of the liveness and streaming
analyses, in those hashes. A class remembers its hash with

    __hash__ = remembered_hash("field", ...)
    __getstate__ = state_without_hash

in its body (so `dataclass` keeps that `__hash__`), naming the fields its generated hash
takes, in order: the value is the one it always was (`remembered_hash_of` for a class
whose hash is that of one attribute, such as `Layout`'s key). A string's hash differs
between processes, so a pickled value (the disk cache stores thread IR) must not carry
its hash to another: `state_without_hash` leaves it out.

`once` is `functools.cached_property` without its lock (Python 3.11 takes one on every
first access; layouts are made by the thousand and most attributes are read once or
twice): a frozen value's attribute computed at most a few times, then read from the
instance's dict.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Generic, TypeVar, overload

#: The attribute holding a remembered hash (not a dataclass field: set past `frozen`).
HASH_ATTR = "_hash"

T = TypeVar("T")


def remember_hash(obj: object, key: object) -> int:
    """`hash(key)`, remembered on `obj` (a frozen dataclass: set as `object` sets it)."""
    value = hash(key)
    object.__setattr__(obj, HASH_ATTR, value)
    return value


def remembered_hash(*fields: str) -> Callable[[Any], int]:
    """A `__hash__`: the hash of the tuple of `fields` (a dataclass's generated hash),
    computed once per object."""
    if len(fields) > 1:
        return _hash_once(attrgetter(*fields))
    return _hash_once(lambda obj: (getattr(obj, fields[0]),))


def remembered_hash_of(name: str) -> Callable[[Any], int]:
    """A `__hash__`: the hash of the attribute `name` (a class's own key), computed once
    per object."""
    return _hash_once(attrgetter(name))


def _hash_once(key: Callable[[Any], object]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        try:
            return self._hash
        except AttributeError:
            return remember_hash(self, key(self))

    return __hash__


def state_without_hash(obj: object) -> dict[str, Any]:
    """`obj`'s attributes for pickling and copying, without its remembered hash."""
    state = obj.__dict__
    if HASH_ATTR not in state:
        return state
    return {name: value for name, value in state.items() if name != HASH_ATTR}


class once(Generic[T]):  # lower case: a decorator, like `property`
    """An attribute of a frozen value computed on first read and kept in the instance's
    dict (which a later read finds first: this is a non-data descriptor)."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> once[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.compute(obj)
        return value
