"""`tilelang compile`: the command line of the ahead-of-time compiler.

    tilelang compile FILE:KERNEL [FILE:KERNEL ...] -D WT=u4 -D G=128
        --arch sm_80 --arch sm_90a [--arch cpu] -o out/
        [--name NAME ...] [--assume all|none|M=16,K=128,s<64 ...] [--ptx-isa 9.0] [--bundle NAME]

`FILE:KERNEL` names a Python file (a file inside a package is imported as that
package's module, so its relative imports work) or `MODULE:KERNEL` an importable
module (``tilelang.kernels.attention:flash_attention_kernel``). `-D` sets a constexpr
of every kernel (a bool one takes True, False, true, false, 1 or 0). `--name` and
`--assume` are given once per kernel, in the order of the kernels (`--assume` may also
be given once for all); `--name` defaults to the kernel's own name, `--assume` to
"none" (every size the kernel's rules accept; "all" assumes every size a multiple of
128, as `Kernel.compile` does by default; ``M=16`` that M is a multiple of 16, the
sizes not named none; ``s<64`` states a value fact: every element of the tensor s is
+0 or positive and below 64, which the CPU library checks and the GPU launcher cannot,
see the header it writes). Value facts never change the size facts: ``s<64`` alone
or ``none,s<64`` assumes no size fact, ``all,s<64`` every size a multiple of 128.
`--bundle NAME` adds a dispatching entry point over all the kernels
(`tilelang.aot.bundle`). Building into a folder that has a manifest adds to it
(`tilelang.aot.manifest`).
"""

from __future__ import annotations

import argparse

from tilelang.aot.c_expr import AotError

_ASSUME_FORMS = (
    "'all', 'none' or SIZE=POW2 and TENSOR<POW2 facts separated by commas, "
    "after 'all' or 'none' if given"
)


def _gpu_archs() -> list[str]:
    """The GPU architectures `--arch` takes: the table `check_archs` checks against."""
    from tilelang.target import TARGETS

    return [name for name, t in TARGETS.items() if t.is_gpu]


def add_parser(sub, run) -> None:
    """Registers the `compile` subcommand on `sub` (an argparse subparsers object);
    `run(args)` runs it (the command line loads the kernels, then calls `compile_kernels`)."""
    command = sub.add_parser(
        "compile",
        help="build kernels ahead of time: cubins, PTX, a C launcher, a CPU library, a manifest",
    )
    command.add_argument(
        "kernels",
        nargs="+",
        metavar="FILE:KERNEL",
        help="e.g. examples/matmul.py:matmul, or MODULE:KERNEL (tilelang.kernels.attention:"
        "flash_attention_kernel)",
    )
    command.add_argument(
        "-D",
        dest="define",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a constexpr value of every kernel, e.g. -D WT=u4 -D G=128",
    )
    command.add_argument(
        "--arch",
        action="append",
        default=[],
        metavar="ARCH",
        help=f"{', '.join(_gpu_archs())} or cpu; repeat for several",
    )
    command.add_argument("-o", "--out", required=True, metavar="DIR", help="the folder to write")
    command.add_argument(
        "--name", action="append", default=[], help="the C name of each kernel, in order"
    )
    command.add_argument(
        "--assume",
        action="append",
        default=[],
        metavar="FACTS",
        help=f"size facts of each kernel's build, in order: {_ASSUME_FORMS} (default none)",
    )
    command.add_argument(
        "--ptx-isa",
        default=None,
        metavar="X.Y",
        help="the PTX ISA version the .ptx files declare (default 9.0: drivers of CUDA 13.0, e.g. 580)",
    )
    command.add_argument(
        "--bundle", metavar="NAME", help="also write NAME.h/NAME.c dispatching over the kernels"
    )
    command.set_defaults(run=run)


def parse_assume(text: str) -> tuple[str, dict[str, int]]:
    """`--assume`: the size facts' base ("all" or "none", which may lead the list; "none"
    when absent) and the facts: SIZE=D (the size is a multiple of D) and TENSOR<B (every
    value is +0 or positive and below B: a value fact, `Kernel.compile`'s assume takes
    both by name)."""
    parts = [part.strip() for part in text.split(",")]
    base = "none"
    if parts[0] in ("all", "none"):
        base = parts.pop(0)
    facts = {}
    for part in parts:
        name, sep, value = part.partition("<" if "<" in part else "=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise AotError(f"--assume: expected {_ASSUME_FORMS}, got {text!r}")
        facts[name.strip()] = int(value)
    return base, facts


def spec_assume(kernel, constexprs: dict, base: str, facts: dict[str, int]) -> object:
    """What `KernelSpec.assume` takes for `--assume`'s base and facts: "all", None, or
    the facts, with every size the list does not name at 128 after "all" (a mapping
    that names no size assumes none: `tilelang.aot.build.KernelSpec`)."""
    if not facts:
        return "all" if base == "all" else None
    if base == "none":
        return facts
    # Deferred: the compiler loads only for this command.
    from tilelang.runtime.launch_facts import MAX_SIZE_DIVISOR

    sizes = [size.name for size in kernel.specialize(**constexprs).sizes]
    return {**dict.fromkeys(sizes, MAX_SIZE_DIVISOR), **facts}


def _per_kernel(values: list, count: int, option: str, default) -> list:
    if not values:
        return [default] * count
    if len(values) == 1 and option == "--assume":
        return values * count
    if len(values) != count:
        raise AotError(f"{option}: give it once per kernel ({count}), got {len(values)}")
    return values


def compile_kernels(args: argparse.Namespace, kernels: list, constexprs: list[dict]) -> int:
    """Runs `tilelang compile` on the kernels its FILE:KERNEL arguments named, each with
    its constexprs (`constexprs[i]`, from the -D options)."""
    # Deferred: the compiler loads only for this command.
    from tilelang.aot.build import KernelSpec, check_archs, compile_aot
    from tilelang.aot.ptx import DEFAULT_PTX_ISA, driver_for, parse_isa

    archs = check_archs(args.arch)
    isa = parse_isa(args.ptx_isa) if args.ptx_isa is not None else DEFAULT_PTX_ISA
    names = _per_kernel(args.name, len(kernels), "--name", None)
    facts = [parse_assume(a) for a in _per_kernel(args.assume, len(kernels), "--assume", "none")]
    specs = [
        KernelSpec(kernel, name or kernel.__name__, given, spec_assume(kernel, given, *fact))
        for kernel, name, given, fact in zip(kernels, names, constexprs, facts, strict=True)
    ]
    manifest = compile_aot(specs, archs, args.out, ptx_isa=isa, bundle=args.bundle)
    built = {spec.name for spec in specs}
    for entry in manifest["kernels"]:
        if entry["name"] in built:
            _print_entry(entry)
    listed = f"{len(manifest['kernels'])} kernels and {len(manifest['files'])} files"
    ptx = f"; its PTX loads on {driver_for(isa)} drivers and later" if set(archs) - {"cpu"} else ""
    print(f"wrote {args.out}: manifest.json lists {listed}{ptx}")
    return 0


def _print_entry(entry: dict) -> None:
    print(f"{entry['name']}: {entry['kernel']} for {', '.join(entry['archs'])}")
    for arch, facts in entry["archs"].items():
        if arch != "cpu":
            print(
                f"  {arch}: {facts['registers']} registers, spills "
                f"{facts['spill_store_bytes']}/{facts['spill_load_bytes']} B, "
                f"{facts['dynamic_shared_bytes']} B shared, PTX ISA {facts['ptx_isa']}"
            )
