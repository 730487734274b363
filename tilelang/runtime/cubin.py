"""What a compiled kernel uses: registers, spills, shared memory, stack frame.

`read_resources(log, cubin, kernel)` reads them from the ptxas ``-v`` lines of NVRTC's
log; when the log lacks them (compiled without ``-v``), from the cubin itself
(`resources_from_cubin`), an ELF64 file parsed here with `struct`:

* ``.nv.info`` holds per-function attributes (EIATTR records: a format byte, an
  attribute byte, then a u16 value or a u16 size and that many bytes). EIATTR_REGCOUNT
  (0x2f) and EIATTR_FRAME_SIZE (0x11) carry (symbol index, value) pairs;
* the top byte of ``.text.<kernel>``'s ``sh_info`` is the register count too (used when
  the attribute is missing);
* ``.nv.shared.<kernel>``'s size is the static shared memory.

The cubin does not record spills: `Resources.spill_*_bytes` are None when read from it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = [
    "CubinError",
    "Resources",
    "read_resources",
    "resources_from_cubin",
    "resources_from_log",
]


@dataclass(frozen=True)
class Resources:
    """Per-thread registers; spill stores/loads and stack frame (local memory) in bytes
    per thread; shared memory in bytes per block: `shared_bytes` static (what ptxas
    reports), `dynamic_shared_bytes` what the launch asks for (tilelang kernels keep
    their shared tiles there; filled in by the build, 0 when read from a log or cubin
    alone), `total_shared_bytes` both. `source` says where they were read: "ptxas"
    (the log) or "cubin"."""

    registers: int
    spill_store_bytes: int | None
    spill_load_bytes: int | None
    shared_bytes: int
    local_bytes: int
    source: str = "ptxas"
    dynamic_shared_bytes: int = 0

    @property
    def total_shared_bytes(self) -> int:
        return self.shared_bytes + self.dynamic_shared_bytes

    @property
    def spills(self) -> int | None:
        """Spill stores + loads in bytes (None when unknown: read from a cubin)."""
        if self.spill_store_bytes is None or self.spill_load_bytes is None:
            return None
        return self.spill_store_bytes + self.spill_load_bytes


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def resources_from_log(log: str, kernel: str) -> Resources | None:
    """The kernel's resources from ptxas ``-v`` output, or None if the log lacks them.

    The lines look like::

        ptxas info    : Compiling entry function 'matmul' for 'sm_80'
        ptxas info    : Function properties for matmul
        ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 40 registers, used 1 barriers, 364 bytes cmem[0]

    ("N bytes smem" joins the last line when the kernel has static shared memory.)
    Properties of other functions (math library slow paths) are told apart by name.
    """
    entry = properties = None
    frame: tuple[int, int, int] | None = None
    used: tuple[int, int] | None = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            entry = m.group(1)
        elif m := _PROPERTIES.search(line):
            properties = m.group(1)
        elif (m := _FRAME.search(line)) and properties == kernel:
            frame = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        elif (m := _USED.search(line)) and entry == kernel:
            smem = _SMEM.search(line)
            used = (int(m.group(1)), int(smem.group(1)) if smem else 0)
    if frame is None or used is None:
        return None
    return Resources(
        registers=used[0],
        spill_store_bytes=frame[1],
        spill_load_bytes=frame[2],
        shared_bytes=used[1],
        local_bytes=frame[0],
    )


def read_resources(log: str, cubin: bytes, kernel: str) -> Resources:
    """From the log when it has the ptxas lines, else from the cubin."""
    found = resources_from_log(log, kernel)
    if found is not None:
        return found
    return resources_from_cubin(cubin, kernel)


# --------------------------------------------------------------------------- the cubin

EIATTR_FRAME_SIZE = 0x11
EIATTR_REGCOUNT = 0x2F
_EIFMT_SVAL = 0x04  # u16 size, then the value's bytes; other formats are 4-byte records


class CubinError(ValueError):
    """The bytes are not a cubin (ELF64) or lack the kernel."""


@dataclass(frozen=True)
class _Section:
    name: str
    offset: int
    size: int
    info: int


def _sections(cubin: bytes) -> list[_Section]:
    if cubin[:4] != b"\x7fELF" or len(cubin) < 64 or cubin[4] != 2 or cubin[5] != 1:
        raise CubinError("not a little-endian ELF64 cubin")
    (shoff,) = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    raw = []
    for i in range(shnum):
        _name, _type, _flags, _addr, offset, size, _link, info, _align, _entsize = (
            struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize)
        )
        raw.append((_name, offset, size, info))
    strtab = raw[shstrndx]

    def name_at(k: int) -> str:
        start = strtab[1] + k
        return cubin[start : cubin.index(b"\0", start)].decode(errors="replace")

    return [_Section(name_at(n), off, size, info) for n, off, size, info in raw]


def _symbol_index(cubin: bytes, sections: list[_Section], kernel: str) -> int | None:
    by_name = {s.name: s for s in sections}
    symtab, strtab = by_name.get(".symtab"), by_name.get(".strtab")
    if symtab is None or strtab is None:
        return None
    for k in range(symtab.size // 24):  # Elf64_Sym: name u32, info, other, shndx, value, size
        (name,) = struct.unpack_from("<I", cubin, symtab.offset + 24 * k)
        start = strtab.offset + name
        if cubin[start : cubin.index(b"\0", start)].decode(errors="replace") == kernel:
            return k
    return None


def _function_attributes(cubin: bytes, section: _Section) -> dict[int, dict[int, int]]:
    """attribute -> {symbol index: value} for the (symbol, u32 value) records of
    ``.nv.info``."""
    out: dict[int, dict[int, int]] = {}
    data = cubin[section.offset : section.offset + section.size]
    p = 0
    while p + 4 <= len(data):
        fmt, attr = data[p], data[p + 1]
        if fmt != _EIFMT_SVAL:
            p += 4
            continue
        (size,) = struct.unpack_from("<H", data, p + 2)
        if size == 8:
            symbol, value = struct.unpack_from("<II", data, p + 4)
            out.setdefault(attr, {})[symbol] = value
        p += 4 + size
    return out


def resources_from_cubin(cubin: bytes, kernel: str) -> Resources:
    """The kernel's registers, stack frame and static shared memory from the cubin
    (spills are not recorded there: None)."""
    sections = _sections(cubin)
    by_name = {s.name: s for s in sections}
    text = by_name.get(f".text.{kernel}")
    if text is None:
        names = sorted(s.name[6:] for s in sections if s.name.startswith(".text."))
        raise CubinError(f"the cubin has no kernel {kernel} (it has {', '.join(names) or 'none'})")
    symbol = _symbol_index(cubin, sections, kernel)
    attrs = _function_attributes(cubin, by_name[".nv.info"]) if ".nv.info" in by_name else {}
    registers = attrs.get(EIATTR_REGCOUNT, {}).get(symbol, text.info >> 24)
    frame = attrs.get(EIATTR_FRAME_SIZE, {}).get(symbol, 0)
    shared = by_name.get(f".nv.shared.{kernel}")
    return Resources(
        registers=registers,
        spill_store_bytes=None,
        spill_load_bytes=None,
        shared_bytes=shared.size if shared is not None else 0,
        local_bytes=frame,
        source="cubin",
    )
