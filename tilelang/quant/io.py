"""The file form of a quantized weight: named arrays with a format version, in a numpy
``.npz`` archive or, for a path ending in ``.safetensors``, a safetensors file (the
optional `safetensors` package). This module knows files and versions, not weights:
`QuantizedWeight` (tilelang.quant.weight) says which arrays it writes and how it reads
them back.

Both containers hold the same fields. In a safetensors file the string fields are its
``__metadata__`` (string to string, which is all safetensors allows there) and every
other field a tensor; `read` tells the containers apart by their first bytes, not by
the file's name, and hands back the same arrays either way.

Version 2 holds (``[G, N]`` per group along K):

* ``version`` (int), ``format``, ``dtype``, ``scale_dtype``, ``packing`` (names, strings),
  ``shape`` ([K, N], the weight's logical shape), ``group_size``;
* ``codes``: the code bytes (uint8, `tilelang.PackedArray`'s bit stream). With packing
  ``"plain"`` they are the row-major [K, N] codes; with ``"dot"`` they are the codes
  `tilelang.pack_for_dot` permuted for the kernels, and the file also holds that
  packing's parameters: ``packing_tile`` ([BK, BN]), ``packing_m``, ``packing_warps``
  (ints), ``packing_operand``, ``packing_acc`` (dtype names);
* ``scale_codes`` [G, N]: the scales as codes of ``scale_dtype``;
* optional: ``zeros`` [G, N] int32, ``tensor_scale`` (f32), ``perm`` [K] int64,
  ``table_codes`` [2^b] (a codebook format's table as codes of ``scale_dtype``).

``table_codes`` came without a version bump: a file without it reads as before, and a
codebook file names a format ("nf4", "fp4_bnb", "codebook") that a tilelang before
codebooks refuses by name.

Version 1 is version 2 with packing ``"plain"`` only (it has no packing fields); it is
still read. Files are read without pickle. A file that is not such an archive, lacks a
required array, or has a version this tilelang does not know (a newer one) is refused
with a ValueError naming the file and the versions it reads. Whether it is an archive
is told by its first bytes (a zip's signature, or a safetensors header) before numpy
reads it: numpy would take any other file for a pickle and advise allow_pickle.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from typing import Any

import numpy as np

VERSION = 2
#: The versions this tilelang reads (it writes `VERSION`).
READS = (1, 2)
REQUIRED = (
    "version", "format", "dtype", "scale_dtype", "packing", "shape", "group_size", "codes",
    "scale_codes",
)  # fmt: skip
#: The fields of a ``"dot"`` packing (version 2).
PACKING_FIELDS = (
    "packing_tile", "packing_m", "packing_warps", "packing_operand", "packing_acc",
)  # fmt: skip
OPTIONAL = ("zeros", "tensor_scale", "perm", "table_codes", *PACKING_FIELDS)


def write(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Write `arrays` (the REQUIRED names, the OPTIONAL ones that are not None) and the
    version to exactly `path` (no ``.npz`` is appended)."""
    unknown = set(arrays) - set(REQUIRED) - set(OPTIONAL)
    assert not unknown, f"not part of the file format: {sorted(unknown)}"
    payload = {name: np.asarray(value) for name, value in arrays.items() if value is not None}
    payload["version"] = np.asarray(VERSION, dtype=np.int64)
    if os.fspath(path).endswith(".safetensors"):
        _write_safetensors(path, payload)
        return
    with open(path, "wb") as f:
        np.savez(f, **payload)


def read(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a version-1 or version-2 file (OPTIONAL ones absent from the dict if
    absent; ``version`` says which)."""
    arrays = _read_safetensors(path) if _is_safetensors(path) else _read_npz(path)
    if "version" not in arrays:
        raise ValueError(f"{path}: no 'version' array: not a tilelang quantized-weight file")
    version = arrays["version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) not in READS:
        raise ValueError(
            f"{path}: quantized-weight file version {version.tolist()!r} is not supported "
            f"(this tilelang reads versions {', '.join(map(str, READS))}; a newer file "
            "needs a newer tilelang)"
        )
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise ValueError(f"{path}: version {int(version)} file lacks {', '.join(missing)}")
    return arrays


#: The first bytes of a zip archive (an .npz): a local file header, or the end of an
#: empty archive.
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        start = f.read(4)
    if start not in _ZIP_STARTS:  # np.load would try pickle, then advise allow_pickle
        raise ValueError(
            f"{path}: not a tilelang quantized-weight file: expected an .npz archive (a zip "
            f"file, starting with b'PK\\x03\\x04') or a safetensors file, got a file "
            f"starting with {start!r}"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:  # a zip: always an NpzFile
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a tilelang quantized-weight file (.npz): {error}") from None
    return arrays


def _is_safetensors(path: str | os.PathLike) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian) and
    the header, a JSON object; an .npz archive starts with a zip signature."""
    with open(path, "rb") as f:
        start = f.read(9)
    return len(start) == 9 and start[8:9] == b"{" and start[:2] != b"PK"


def _safetensors(path: str | os.PathLike, doing: str) -> Any:
    """The safetensors package (its `numpy` submodule imported), or a clear ImportError."""
    try:
        importlib.import_module("safetensors.numpy")
        return importlib.import_module("safetensors")
    except ImportError:
        raise ImportError(
            f"{path}: {doing} a safetensors file needs the optional package safetensors "
            "(pip install safetensors); an .npz path needs nothing"
        ) from None


def _write_safetensors(path: str | os.PathLike, payload: dict[str, np.ndarray]) -> None:
    module = _safetensors(path, "writing")
    strings = {name: str(a) for name, a in payload.items() if a.dtype.kind == "U"}
    # np.ascontiguousarray would make 0-d fields 1-d
    tensors = {name: np.array(a, order="C") for name, a in payload.items() if name not in strings}
    module.numpy.save_file(tensors, path, metadata=strings)


def _read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    module = _safetensors(path, "reading")
    try:
        with module.safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (OSError, ValueError, module.SafetensorError) as error:
        raise ValueError(
            f"{path}: not a tilelang quantized-weight file (safetensors): {error}"
        ) from None
    strings = {name: np.asarray(text) for name, text in metadata.items() if name not in arrays}
    return {**strings, **arrays}


def text(arrays: dict[str, np.ndarray], name: str, path: str | os.PathLike) -> str:
    """A string field (a 0-d unicode array)."""
    value = arrays[name]
    if value.shape != () or value.dtype.kind != "U":
        raise ValueError(f"{path}: {name!r} must be a string, got {value.dtype} {value.shape}")
    return str(value)


def integer(arrays: dict[str, np.ndarray], name: str, path: str | os.PathLike) -> int:
    value = arrays[name]
    if value.shape != () or value.dtype.kind not in "iu":
        raise ValueError(f"{path}: {name!r} must be an integer, got {value.dtype} {value.shape}")
    return int(value)
