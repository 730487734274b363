"""What a compiled kernel's disk-cache entry keeps besides its machine code, the same for
the GPU build (`tilelang.runtime.cuda_build`) and the CPU build
(`tilelang.runtime.cpu_build`):

* the warnings the passes gave, as records (module, class name, message, file, line)
  that a hit gives again at the user's lines, since a build read from disk runs no pass;
* the thread IR, pickled (the cache is the user's own directory) and read back on first
  use; one that does not unpickle discards the entry and is lowered again.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from collections.abc import Callable

from tilelang.ir.thread import ThreadFunction
from tilelang.runtime.cache import DiskCache

#: Errors that mean "this pickle is not a thread function this code can read".
UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
)


def record(category: type[Warning], message: str, file: str, line: int) -> list:
    """A warning as an entry keeps it."""
    return [category.__module__, category.__qualname__, message, file, line]


def warning_record(w: warnings.WarningMessage) -> list:
    return record(w.category, str(w.message), w.filename, w.lineno)


def are_records(records: object) -> bool:
    """Whether `records` is a list of what `record` writes."""
    if not isinstance(records, list):
        return False
    for item in records:
        if not isinstance(item, list) or len(item) != 5:
            return False
        *texts, line = item
        if not all(isinstance(x, str) for x in texts) or type(line) is not int:
            return False
    return True


def replay(records: list) -> None:
    """Warns each recorded warning again, at its own file and line."""
    for module, qualname, message, filename, lineno in records:
        try:
            category = getattr(importlib.import_module(module), qualname)
        except (ImportError, AttributeError):
            category = UserWarning
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = UserWarning
        warnings.warn_explicit(message, category, filename, lineno)


def stored_thread(
    pickled: bytes, cache: DiskCache, key: str, lower: Callable[[], ThreadFunction]
) -> ThreadFunction:
    """The entry's thread IR; if it does not unpickle, the entry is discarded (the next
    compile rebuilds it) and the thread IR is lowered again, which gives the same
    program the entry's machine code was made from (same key, same compiler). Its
    warnings are not given twice: the hit gave them already, from the entry."""
    try:
        thread = pickle.loads(pickled)
    except UNPICKLE_ERRORS:
        thread = None
    if isinstance(thread, ThreadFunction):
        return thread
    cache.discard(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lower()
