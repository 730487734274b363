"""`manifest.json` of an ahead-of-time folder, and what a second build into it does.

A folder may collect several `tilelang compile` runs (one kernel per run, a CPU library
and a GPU launcher of the same kernel under two `--name`s, ...): the manifest of a run
into a folder that has one is *merged* into it. Entries are keyed by kernel name (the C
name, `--name`): a kernel built again replaces its own entry and the files that entry
listed; the other kernels keep theirs, as do bundles (by bundle name), so the manifest
lists every kernel the folder holds, with the sha256 of each file. Files of a replaced
entry that the new build does not write again (an architecture it dropped) stay on
disk but are no longer listed.

A merge is refused, before anything is written (`AotError`), when the folder's manifest
is not one `tilelang compile` wrote, when it was written by another tilelang version, or
by a GPU build with another `--ptx-isa` or NVRTC (one manifest states one of each), when
a name would be a kernel in one run and a bundle in the other, or when a kernel built
again takes other arguments than a bundle already in the folder calls it with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tilelang.aot.c_expr import AotError

MANIFEST = "manifest.json"
HALF_RUNTIME = "tilelang_half_runtime.o"

#: Top-level fields one manifest states for every kernel it lists.
_SHARED = ("tilelang_version", "ptx_isa")


def read(out: Path) -> dict[str, Any] | None:
    """The manifest in folder `out`, checked to be one `compile_aot` writes; None if
    there is none."""
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _foreign(path, f"it does not read as JSON: {error}") from None
    fields = {"kernels": list, "files": dict, "archs": list, "bundles": dict}
    if not isinstance(manifest, dict):
        raise _foreign(path, "it is not a JSON object")
    for name, kind in fields.items():
        if not isinstance(manifest.get(name), kind):
            raise _foreign(path, f"its {name!r} is not a {kind.__name__}")
    for entry in manifest["kernels"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _foreign(path, "a kernel entry has no name")
    return manifest


def _foreign(path: Path, why: str) -> AotError:
    return AotError(
        f"{path} is not a manifest tilelang compile writes ({why}): remove it or build "
        "into another folder"
    )


def entry_files(entry: dict[str, Any]) -> set[str]:
    """The files a kernel's manifest entry lists: its header, launcher, and per
    architecture its cubin and PTX or CPU library, object and C source."""
    names = {entry.get("header"), entry.get("launcher")}
    for facts in (entry.get("archs") or {}).values():
        if isinstance(facts, dict):
            names |= {facts.get(k) for k in ("cubin", "ptx", "library", "object", "source")}
    return {name for name in names if isinstance(name, str)}


def merge(out: Path, previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The manifest of folder `out` once this run's `new` manifest is written into it
    (module docstring); `new` itself when the folder has none."""
    if previous is None:
        return new
    where = out / MANIFEST
    both_gpu = _has_gpu(previous) and _has_gpu(new)  # the PTX ISA is a GPU build's
    for field in _SHARED:
        if previous.get(field) != new[field] and (field != "ptx_isa" or both_gpu):
            raise AotError(
                f"{where} was written with {field} {previous.get(field)}, this build has "
                f"{new[field]}: one manifest states one of each; build into another folder "
                "(or remove the folder's files to start it again)"
            )
    ptx = new if _has_gpu(new) or not _has_gpu(previous) else previous
    nvrtc = [v for v in (previous.get("nvrtc"), new["nvrtc"]) if v is not None]
    if len(set(nvrtc)) > 1:
        raise AotError(
            f"{where} lists cubins of NVRTC {nvrtc[0]}, this build's come from NVRTC "
            f"{nvrtc[1]}: build into another folder"
        )
    built = {entry["name"]: entry for entry in new["kernels"]}
    _check_names(where, previous, new, built)
    replaced = [e for e in previous["kernels"] if e["name"] in built]
    dropped = set().union(*(entry_files(e) for e in replaced))
    dropped |= {f"{b}.{suffix}" for b in new["bundles"] for suffix in ("h", "c")}
    files = {n: digest for n, digest in previous["files"].items() if n not in dropped}
    files.update(new["files"])
    kept = [built.pop(e["name"], e) for e in previous["kernels"]]  # in place, in order
    return {
        **new,
        "nvrtc": nvrtc[0] if nvrtc else None,
        "ptx_isa": ptx["ptx_isa"],
        "ptx_loads_on": ptx.get("ptx_loads_on"),
        "archs": list(dict.fromkeys([*previous["archs"], *new["archs"]])),
        "bundles": {**previous["bundles"], **new["bundles"]},
        "kernels": kept + list(built.values()),
        "files": dict(sorted(files.items())),
    }


def _has_gpu(manifest: dict[str, Any]) -> bool:
    return any(arch != "cpu" for arch in manifest["archs"])


def _check_names(
    where: Path, previous: dict[str, Any], new: dict[str, Any], built: dict[str, Any]
) -> None:
    """A name is a kernel or a bundle, never both; a bundle left in the folder still
    calls its kernels with the arguments they take."""
    kernels = {e["name"]: e for e in previous["kernels"]}
    for name in built:
        if name in previous["bundles"] and name not in new["bundles"]:
            raise AotError(f"--name {name}: {where} has a bundle of that name")
    for bundle in new["bundles"]:
        if bundle in kernels and bundle not in built:
            raise AotError(f"--bundle {bundle}: {where} has a kernel of that name")
    for bundle, members in previous["bundles"].items():
        if bundle in new["bundles"]:
            continue
        for name in members:
            old, now = kernels.get(name), built.get(name)
            if old is not None and now is not None and _arguments(old) != _arguments(now):
                raise AotError(
                    f"{name}: the bundle {bundle} in {where.parent} calls it with "
                    f"({_arguments(old)}), this build takes ({_arguments(now)}); build the "
                    f"bundle again with it (--bundle {bundle}) or build into another folder"
                )


def _arguments(entry: dict[str, Any]) -> str:
    """The parameter list of an entry's C prototype "int NAME(...)"."""
    prototype = str(entry.get("entry", ""))
    return prototype.partition("(")[2].rpartition(")")[0]


def write(out: Path, manifest: dict[str, Any]) -> None:
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
