"""The block-IR verifier: a valid kernel passes; each rule rejects a broken one, and the
message starts with the source location and says what was expected and found."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tilelang import dtypes as dt
from tilelang.ir import nodes as ir
from tilelang.ir.parser import parse_function
from tilelang.ir.types import ScalarType, TileType
from tilelang.ir.verify import IRVerifyError, verify

HEADER = (
    "kernel k(%x: tensor<f16, [M, N]>, %y: tensor<f32, [M, N]>, %i: tensor<i8, [M, N // 2]>, "
    '%a: f32, %c: u1) sizes(%M: i32, %N: i32) warps(4) loc("k.py":1:1) {\n'
)
PRELUDE = [
    '%bm, %bn = blocks %M, %N : i32, i32  loc("k.py":2:3)',
    "%t = load %x[%bm, %bn] : tile<f16, [16, 32]>",
    "%f = load %y[%bm, %bn] fill(-1.0:f32) : tile<f32, [16, 32]>",
    "%q = load %i[%bm, %bn] : tile<i8, [16, 32]>",
    "%s = shared_alloc : shared<f16, [16, 32]>",
]
BAD = '  loc("bad.py":7:5)'
AT_BAD = "bad.py:7:5: "


def kernel(*lines: str, prelude: list[str] = PRELUDE) -> ir.Function:
    body = "".join(f"  {line}\n" for line in [*prelude, *lines])
    return parse_function(HEADER + body + "}\n")


def verify_error(fn: ir.Function) -> str:
    with pytest.raises(IRVerifyError) as info:
        verify(fn)
    assert isinstance(info.value, ValueError)
    return str(info.value)


VALID = [
    "%m = add %M, 15:i32 : i32",
    "%one = full 1.0:f16 : tile<f16, [16, 32]>",
    "%u = add %t, %one : tile<f16, [16, 32]>",
    "%v = mul %u, 2.0:f16 : tile<f16, [16, 32]>",  # scalar operands broadcast
    "%lt = lt %f, %a : tile<u1, [16, 32]>",
    "%w = where %lt, %f, 0.0:f32 : tile<f32, [16, 32]>",
    "%sh = shr %q, 2:i8 : tile<i8, [16, 32]>",
    "%h = cast %w : tile<f16, [16, 32]>",
    "%bits = view %h : tile<u8, [16, 64]>",
    "%packed = view %t : tile<u4, [16, 128]>",
    "%tt = transpose %h, perm=[1, 0] : tile<f16, [32, 16]>",
    "%d = dot %h, %tt, %acc0 : tile<f32, [16, 16]>",
    "%di = dot %q, %qt, %iacc : tile<i32, [16, 16]>",
    "%r = reduce sum %d, axis=1 : tile<f32, [16]>",
    "%r0 = reduce max %r, axis=0 : f32",
    "%rx = reduce xor %q, axis=0 : tile<i8, [32]>",
    "%cs = scan max %d, axis=0, reverse : tile<f32, [16, 16]>",
    "%rs = reshape %r : tile<f32, [4, 4]>",
    "%b1 = reshape %r : tile<f32, [16, 1]>",
    "%bb = broadcast %b1 : tile<f32, [16, 16]>",
    "%bs = broadcast %a : tile<f32, [16, 16]>",
    "%idx = arange 0 : tile<i32, [16]>",
    "copy_async %x[%bm, %bn] -> %s",
    "async_commit",
    "async_wait 0",
    "sync",
    "%sl = shared_load %s : tile<f16, [16, 32]>",
    "shared_store %s, %sl",
    'print "d", %d',
    'print "scalar", 3:i32',
    "store %y[%bm, %bn], %f",
]
VALID_PRELUDE_EXTRA = [
    "%acc0 = full 0.0:f32 : tile<f32, [16, 16]>",
    "%iacc = full 0:i32 : tile<i32, [16, 16]>",
    "%qt = load %i[%bm, %bn] : tile<i8, [32, 16]>",
]
LOOP = [
    "%acc = for %k = 0:i32 to %N step 32:i32 iter(%c0: tile<f32, [16, 32]> = %f) unroll(4) stages(2) {",
    "  %ld = load %y[%bm, %k] : tile<f32, [16, 32]>",
    "  %pos = gt %k, 0:i32 : u1",
    "  %n = if %pos -> (tile<f32, [16, 32]>) {",
    "    %sum = add %c0, %ld : tile<f32, [16, 32]>",
    "    yield %sum",
    "  } else {",
    "    yield %ld",
    "  }",
    "  yield %n",
    "}",
    "if %c {",
    "  store %y[%bm, %bn], %acc",
    "  yield",
    "} else {",
    "  yield",
    "}",
]


def test_a_valid_kernel_passes():
    verify(kernel(*VALID_PRELUDE_EXTRA, *VALID, *LOOP))


def test_scalar_arithmetic_may_precede_blocks():
    prelude = [
        "%g = add %M, 1:i32 : i32",
        "%g2 = cast %g : i64",
        "%g3 = full 2:i32 : i32",
        *PRELUDE,
    ]
    verify(kernel(prelude=prelude))


CASES = [
    # -- SSA and scope
    (["%t = add %a, %a : f32" + BAD], "defined a second time (first at <unknown>:0:0)"),
    (
        ["%r = add %later, %a : f32" + BAD, "%later = add %a, %a : f32"],
        "%later is used before its definition",
    ),
    (
        [
            "for %k = 0:i32 to %N step 1:i32 {",
            "  %inner = add %a, %a : f32",
            "  yield",
            "}",
            "%r = add %inner, %a : f32" + BAD,
        ],
        "%inner (defined at <unknown>:0:0) is not visible here",
    ),
    (
        [
            "%v = if %c -> (f32) {",
            "  %z = add %a, %a : f32",
            "  yield %z",
            "} else {",
            "  %z2 = add %z, %a : f32" + BAD,
            "  yield %z2",
            "}",
        ],
        "%z (defined at <unknown>:0:0) is not visible here",
    ),
    # -- compute
    (
        ["%r = frobnicate %a, %a : f32" + BAD],
        "frobnicate: expected an elementwise operator",
        "'frobnicate'",
    ),
    (["%r = add %a : f32" + BAD], "add: expected 2 operand(s), found 1"),
    (
        ["%r = and %f, %f : tile<f32, [16, 32]>" + BAD],
        "and: expected int operands, found dtype f32",
    ),
    (["%r = exp %q : tile<i8, [16, 32]>" + BAD], "exp: expected float operands, found dtype i8"),
    (
        ["%r = add %t, %f : tile<f16, [16, 32]>" + BAD],
        "expected every operand of dtype f16",
        "found %f of type tile<f32, [16, 32]>",
    ),
    (
        ["%r = add %a, 1:i32 : f32" + BAD],
        "expected every operand of dtype f32",
        "found the constant 1:i32",
    ),
    (
        ["%r1 = reshape %t : tile<f16, [32, 16]>", "%r = add %t, %r1 : tile<f16, [16, 32]>" + BAD],
        "expected tile operands of the result's shape [16, 32]",
        "found %r1 of type tile<f16, [32, 16]>",
    ),
    (
        ["%r = add %t, %t : tile<f16, [16, 16]>" + BAD],
        "expected tile operands of the result's shape [16, 16]",
    ),
    (
        ["%r = lt %f, %f : tile<f32, [16, 32]>" + BAD],
        "lt: expected a result of dtype u1, found f32",
    ),
    (["%r = add %f, %f : tile<f16, [16, 32]>" + BAD], "expected a result of dtype f32, found f16"),
    (
        ["%r = where %f, %f, %f : tile<f32, [16, 32]>" + BAD],
        "where: expected a condition of dtype u1, found f32",
    ),
    (["%r = add %t, %t : f16" + BAD], "expected a tile result (an operand is a tile), found f16"),
    (
        ["%r = add %a, %a : tile<f32, [4]>" + BAD],
        "expected a scalar result (every operand is a scalar)",
    ),
    (
        ["%r = add %s, %s : f16" + BAD],
        "expected every operand to be a scalar or a register tile",
        "shared<f16, [16, 32]>",
    ),
    # -- cast, view
    (["%r = cast %t : tile<f32, [32, 16]>" + BAD], "cast: expected a result of the value's shape"),
    (["%r = cast %t : f32" + BAD], "cast: expected a result of the value's shape, found f32"),
    (
        ["%r = view %t : tile<u8, [16, 32]>" + BAD],
        "view: expected (without layouts) the same rank and leading dims and the same bits per row",
    ),
    (["%r = view %t : tile<u8, [32, 32]>" + BAD], "view: expected (without layouts)"),
    (
        [
            "%l = full 0.0:f16 : tile<f16, [16, 32], spatial(8, 4).local(2, 8)>",
            "%r = view %l : tile<u4, [16, 64], spatial(4, 8).local(4, 8)>" + BAD,
        ],
        "view: expected equal bits per thread, found 256 -> 128",
    ),
    (
        [
            "%l = full 0.0:f16 : tile<f16, [16, 32], spatial(8, 4).local(2, 8)>",
            "%r = view %l : tile<u8, [16, 32], spatial(16, 4).local(1, 8)>" + BAD,
        ],
        "view: expected equal thread counts, found 32 -> 64",
    ),
    # -- dot
    (
        ["%r = dot %t, %t, %f : tile<f32, [16, 32]>" + BAD],
        "dot: expected a [M, K] and b [K, N], found a [16, 32] and b [16, 32]",
    ),
    (
        [
            "%b = transpose %t, perm=[1, 0] : tile<f16, [32, 16]>",
            "%r = dot %t, %b, %f : tile<f32, [16, 16]>" + BAD,
        ],
        "expected the accumulator of shape [M, N] = [16, 16], found tile<f32, [16, 32]>",
    ),
    (
        [
            "%b = transpose %t, perm=[1, 0] : tile<f16, [32, 16]>",
            "%acc = full 0:i32 : tile<i32, [16, 16]>",
            "%r = dot %t, %b, %acc : tile<i32, [16, 16]>" + BAD,
        ],
        "dot: expected an accumulator of dtype f32 or f16 for f16 operands, found i32",
    ),
    (
        [
            "%b = load %i[%bm, %bn] : tile<i8, [32, 16]>",
            "%acc = full 0.0:f32 : tile<f32, [16, 16]>",
            "%r = dot %t, %b, %acc : tile<f32, [16, 16]>" + BAD,
        ],
        "dot: expected b (a's dtype) of dtype f16, found i8",
    ),
    (
        [
            "%a4 = full 0:u4 : tile<u4, [16, 32]>",
            "%b4 = full 0:u4 : tile<u4, [32, 16]>",
            "%acc = full 0:i32 : tile<i32, [16, 16]>",
            "%r = dot %a4, %b4, %acc : tile<i32, [16, 16]>" + BAD,
        ],
        "dot: expected operands of dtype f16, bf16, i8, u8, f32, found u4",
    ),
    (
        [
            "%b = transpose %t, perm=[1, 0] : tile<f16, [32, 16]>",
            "%acc = full 0.0:f32 : tile<f32, [16, 16]>",
            "%r = dot %t, %b, %acc : tile<f16, [16, 16]>" + BAD,
        ],
        "dot: expected a result (the accumulator's dtype) of dtype f32, found f16",
    ),
    # -- load, store, copy_async
    (
        ["%r = load %a[%bm, %bn] : tile<f32, [16, 32]>" + BAD],
        "load: expected a global tensor parameter of the kernel, found %a of type f32",
    ),
    (
        ["%r = load %x[%bm] : tile<f16, [16, 32]>" + BAD],
        "load: expected 2 offsets (one per tensor dim), found 1",
    ),
    (
        ["%r = load %x[%bm, %a] : tile<f16, [16, 32]>" + BAD],
        "load: expected offset 1 to be an integer scalar, found %a of type f32",
    ),
    (
        ["%r = load %x[%bm, %t] : tile<f16, [16, 32]>" + BAD],
        "expected offset 1 to be an integer scalar, found %t",
    ),
    (
        ["%r = load %x[%bm, %bn] : tile<f16, [512]>" + BAD],
        "load: expected a result of rank 2 (the tensor's), found tile<f16, [512]>",
    ),
    (
        ["%r = load %x[%bm, %bn] : tile<f32, [16, 32]>" + BAD],
        "load: expected a result of dtype f16, found f32",
    ),
    (
        ["%r = load %x[%bm, %bn] fill(0.0:f32) : tile<f16, [16, 32]>" + BAD],
        "load: expected a fill value of dtype f16, found f32",
    ),
    (
        ["%r = load %x[%bm, %bn] fill(%a) : tile<f16, [16, 32]>" + BAD],
        "load: expected a constant fill value, found %a",
    ),
    (["store %x[%bm, %bn], %f" + BAD], "store: expected a stored tile of dtype f16, found f32"),
    (
        ["%r = reshape %t : tile<f16, [512]>", "store %x[%bm, %bn], %r" + BAD],
        "store: expected a stored tile of rank 2",
    ),
    (
        ["store %x[%bm, %bn], %a" + BAD],
        "store: expected the stored value to be a register tile, found %a of type f32",
    ),
    (
        ["copy_async %y[%bm, %bn] -> %s" + BAD],
        "copy_async: expected a shared tile of dtype f32, found f16",
    ),
    (["copy_async %x[%bm, %bn] -> %t" + BAD], "copy_async: expected a shared tile, found %t"),
    (["async_wait -1" + BAD], "async_wait: expected a count of pending groups >= 0, found -1"),
    (
        ["%r = shared_load %s : tile<f16, [32, 16]>" + BAD],
        "shared_load: expected a result of the shared tile's dtype and shape, f16 [16, 32]",
    ),
    (
        ["shared_store %s, %f" + BAD],
        "shared_store: expected a stored tile of the shared tile's dtype and shape",
    ),
    (
        ["%r = shared_alloc : tile<f16, [4]>" + BAD],
        "shared_alloc: expected a shared tile result, found tile<f16, [4]>",
    ),
    # -- reduce, scan, reshape, transpose, broadcast, full, arange
    (
        ["%r = reduce sum %f, axis=2 : tile<f32, [16]>" + BAD],
        "reduce: expected an axis in 0..1, found 2",
    ),
    (
        ["%r = reduce mean %f, axis=1 : tile<f32, [16]>" + BAD],
        "reduce: expected a reduction in sum, prod, max, min, and, or, xor, found 'mean'",
    ),
    (
        ["%r = reduce sum %f, axis=1 : tile<f32, [32]>" + BAD],
        "reduce: expected a result of shape [16], found tile<f32, [32]>",
    ),
    (
        ["%r = reduce and %f, axis=1 : tile<f32, [16]>" + BAD],
        "reduce: expected an integer tile for and, found f32",
    ),
    (
        ["%r = scan xor %q, axis=1 : tile<i8, [16, 32]>" + BAD],
        "scan: expected a scan in sum, prod, max, min, found 'xor'",
    ),
    (
        ["%r = scan sum %f, axis=-1 : tile<f32, [16, 32]>" + BAD],
        "scan: expected an axis in 0..1, found -1",
    ),
    (
        ["%r = scan sum %f, axis=0 : tile<f32, [16]>" + BAD],
        "scan: expected a result of the value's shape and dtype",
    ),
    (
        ["%r = reshape %t : tile<f16, [16, 16]>" + BAD],
        "reshape: expected a result of 512 elements, found tile<f16, [16, 16]>",
    ),
    (
        ["%r = reshape %t : tile<f32, [512]>" + BAD],
        "reshape: expected a result of dtype f16, found f32",
    ),
    (
        ["%r = transpose %t, perm=[0, 0] : tile<f16, [16, 16]>" + BAD],
        "transpose: expected a permutation of 0..1, found [0, 0]",
    ),
    (
        ["%r = transpose %t, perm=[1, 0] : tile<f16, [16, 32]>" + BAD],
        "transpose: expected a result of shape [32, 16]",
    ),
    (
        ["%r = broadcast %t : tile<f16, [32, 32]>" + BAD],
        "broadcast: expected a result of the same rank whose dims equal the value's or extend a 1",
    ),
    (
        ["%r = broadcast %t : tile<f16, [1, 16, 32]>" + BAD],
        "broadcast: expected a result of the same rank",
    ),
    (
        ["%r = broadcast %a : tile<f16, [4]>" + BAD],
        "broadcast: expected a result of dtype f32, found f16",
    ),
    (["%r = full %t : tile<f16, [16, 32]>" + BAD], "full: expected a scalar value, found %t"),
    (
        ["%r = arange 0 : tile<i32, [4, 4]>" + BAD],
        "arange: expected a 1-D integer tile result, found tile<i32, [4, 4]>",
    ),
    (["%r = arange 0 : tile<f32, [4]>" + BAD], "arange: expected a 1-D integer tile result"),
    # -- control flow
    (
        ["for %k = 0.0:f32 to %N step 1:i32" + BAD + " {", "  yield", "}"],
        "for: expected the start (loop bounds are block-uniform) to be an integer scalar, found the constant 0.0:f32",
    ),
    (
        [
            "%m = reduce max %q, axis=1 : tile<i8, [16]>",
            "for %k = 0:i32 to %m step 1:i32" + BAD + " {",
            "  yield",
            "}",
        ],
        "for: expected the stop (loop bounds are block-uniform) to be an integer scalar, found %m of type tile<i8, [16]>",
    ),
    (
        [
            "%r = for %k = 0:i32 to %N step 1:i32 iter(%c0: tile<f32, [16, 32]> = %t)" + BAD + " {",
            "  yield %c0",
            "}",
        ],
        "for: expected the carried values to have the types of the initial values (tile<f16, [16, 32]>), found tile<f32, [16, 32]>",
    ),
    (
        [
            "%r = for %k = 0:i32 to %N step 1:i32 iter(%c0: f32 = %a)" + BAD + " {",
            "  yield %k",
            "}",
        ],
        "for: expected the yielded values to have the types of the carried values (f32), found i32",
    ),
    (
        [
            "%r = for %k = 0:i32 to %N step 1:i32 iter(%c0: f32 = %a) -> (f16)" + BAD + " {",
            "  yield %c0",
            "}",
        ],
        "for: expected the results to have the types of the carried values (f32), found f16",
    ),
    (
        ["for %k = 0:i32 to %N step 1:i32 iter(_ = %a)" + BAD + " {", "  yield", "}"],
        "for: expected the carried values to have the types of the initial values (f32), found none",
    ),
    (
        ["for %k: f32 = 0:i32 to %N step 1:i32" + BAD + " {", "  yield", "}"],
        "for: expected the loop variable to be an integer scalar, found %k of type f32",
    ),
    (
        ["for %k = 0:i32 to %N step 1:i32 stages(0)" + BAD + " {", "  yield", "}"],
        "for: expected stages to be absent or >= 1, found 0",
    ),
    (
        ["for %k = 0:i32 to %N step 1:i32" + BAD + " {", "  %z = add %a, %a : f32", "}"],
        "for: expected the loop body to end in yield, found Compute",
    ),
    (
        ["for %k = 0:i32 to %N step 1:i32" + BAD + " {", "}"],
        "for: expected the loop body to end in yield, found an empty body",
    ),
    (
        [
            "for %k = 0:i32 to %N step 1:i32 {",
            "  yield" + BAD,
            "  %z = add %a, %a : f32",
            "  yield",
            "}",
        ],
        "yield: expected yield only as the last instruction of a body, found it before the end of a body",
    ),
    (
        ["yield %a" + BAD],
        "yield: expected yield only as the last instruction of a body, found it at the top level",
    ),
    (
        [
            "%lt = lt %f, %f : tile<u1, [16, 32]>",
            "if %lt" + BAD + " {",
            "  yield",
            "} else {",
            "  yield",
            "}",
        ],
        "if: expected a scalar condition, found the tile %lt",
        "non-uniform control flow",
    ),
    (
        ["if %M" + BAD + " {", "  yield", "} else {", "  yield", "}"],
        "if: expected a condition of dtype u1, found i32",
    ),
    (
        ["%v = if %c -> (f32)" + BAD + " {", "  yield %a", "} else {", "  yield %M", "}"],
        "if: expected the values yielded by the else body to have the types of the results (f32), found i32",
    ),
    (
        ["%v = if %c -> (f32)" + BAD + " {", "  yield", "} else {", "  yield %a", "}"],
        "if: expected the values yielded by the then body to have the types of the results (f32), found none",
    ),
    (
        ["if %c" + BAD + " {", "  yield", "} else {", "}"],
        "if: expected the else body to end in yield, found an empty body",
    ),
    # -- constants and shapes that cannot be compiled (they would fail deep in a pass)
    (["%o = add %M, 1e309:i32 : i32" + BAD], "expected an integer constant of i32, found inf:i32"),
    (["%o = add %M, 2.5:i32 : i32" + BAD], "expected an integer constant of i32, found 2.5:i32"),
    (
        ["%o = add %M, 2147483648:i32 : i32" + BAD],
        "the constant 2147483648:i32 is out of the range of i32 (-2147483648..2147483647)",
    ),
    (["%o = sub %c, -1:u1 : u1" + BAD], "out of the range of u1 (0..1)"),
    (
        ["%o = full 0.0:f32 : tile<f32, [2147483648]>" + BAD],
        "%o: a tile of shape [2147483648] has 2147483648 elements, more than the 16777216",
    ),
    (
        ["%o = shared_alloc : shared<f32, [65536, 65536]>" + BAD],
        "more than the 16777216 any block can hold",
    ),
    # -- loop steps are known before the launch
    (
        ["for %k = 0:i32 to %N step %bm" + BAD + " {", "  yield", "}"],
        "for: expected the step to be known before the launch",
        "found %bm, which depends on a block index",
    ),
    # -- blocks
    (
        ["%b2, %b3 = blocks %M, %N : i32, i32" + BAD],
        "blocks: expected one blocks instruction, found a second",
    ),
    (
        ["for %k = 0:i32 to %N step 1:i32 {", "  %b2 = blocks %M : i32" + BAD, "  yield", "}"],
        "blocks: expected blocks at the top level of the kernel, found it inside a body",
    ),
]


@pytest.mark.parametrize(("lines", "fragments"), [(case[0], case[1:]) for case in CASES])
def test_each_rule_rejects_a_broken_kernel(lines, fragments):
    message = verify_error(kernel(*lines))
    assert message.startswith(AT_BAD), message
    for fragment in fragments:
        assert fragment in message, message


#: Each instruction that reads `fill` outside the tensor: (opcode, its text before the fill,
#: its result type) — on %x, whose elements are f16.
FILLED = [
    ("load", "load %x[%bm, %bn]", "tile<f16, [16, 32]>"),
    ("load_scalar", "load_scalar %x[%bm, %bn]", "f16"),
    ("gather", "gather %x[0:i32, 0:i32], %rows, axis=0", "tile<f16, [16, 32]>"),
]


@pytest.mark.parametrize(("op", "read", "result"), FILLED, ids=[f[0] for f in FILLED])
@pytest.mark.parametrize(
    ("fill", "expected"),
    [
        ("0.0:f32", "expected a fill value of dtype f16, found f32"),
        ("%a", "expected a constant fill value, found %a of type f32"),
        ("0:i16", "expected a fill value of dtype f16, found i16"),
    ],
)
def test_every_read_with_a_fill_checks_it_is_a_constant_of_the_tensors_dtype(
    op, read, result, fill, expected
):
    rows = "%rows = full 0:i32 : tile<i32, [16, 1]>"
    assert verify(kernel(rows, f"%r = {read} fill(0.0:f16) : {result}")) is None
    message = verify_error(kernel(rows, f"%r = {read} fill({fill}) : {result}" + BAD))
    assert message == f"{AT_BAD}{op}: {expected}"


@pytest.mark.parametrize(
    ("prelude", "fragments"),
    [
        ([], ("k.py:1:1: kernel k: expected one blocks instruction at the top level, found none",)),
        (
            ["%t = load %x[%M, %N] : tile<f16, [16, 32]>" + BAD, *PRELUDE[:1]],
            (AT_BAD + "load: expected the blocks instruction before this one",),
        ),
        (
            ["%bm = blocks %a : i32" + BAD],
            (AT_BAD + "blocks: expected grid size 0 to be an integer scalar",),
        ),
        (
            ["%b0, %b1 = blocks %M : i32, i32" + BAD],
            (AT_BAD + "blocks: expected one block index per grid size (1), found 2",),
        ),
        (["blocks" + BAD], (AT_BAD + "blocks: expected 1 to 3 grid sizes, found 0",)),
        (
            ["%b = blocks %M : f32" + BAD],
            (AT_BAD + "blocks: expected block index 0 to be an integer scalar",),
        ),
    ],
)
def test_blocks_placement(prelude, fragments):
    message = verify_error(kernel(prelude=prelude))
    for fragment in fragments:
        assert message.startswith(fragment) or fragment in message, message


# -- rules that text cannot express (the parser resolves names to their definitions) ---


def _first(fn: ir.Function, cls: type) -> ir.Instr:
    return next(i for i in fn.body.instrs if isinstance(i, cls))


def _replace_instr(fn: ir.Function, old: ir.Instr, new: ir.Instr) -> ir.Function:
    instrs = tuple(new if i is old else i for i in fn.body.instrs)
    return replace(fn, body=ir.Block(instrs))


def test_a_use_must_carry_the_type_of_its_definition():
    fn = kernel("%r = add %a, %a : f32" + BAD)
    compute = _first(fn, ir.Compute)
    wrong = ir.Var("a", ScalarType(dt.f16))
    fn = _replace_instr(fn, compute, replace(compute, args=(wrong, compute.args[1])))
    message = verify_error(fn)
    assert message.startswith(
        AT_BAD + "add: %a is used with type f16, expected the type of its definition, f32"
    )


def test_an_undefined_value_is_named():
    fn = kernel("%r = add %a, %a : f32" + BAD)
    compute = _first(fn, ir.Compute)
    ghost = ir.Var("ghost", ScalarType(dt.f32))
    fn = _replace_instr(fn, compute, replace(compute, args=(ghost, ghost)))
    assert verify_error(fn).startswith(AT_BAD + "add: %ghost is used but never defined")


def test_function_level_rules():
    fn = kernel()
    for warps in (0, 33, 2**63):
        assert verify_error(replace(fn, warps=warps)).startswith(
            f"k.py:1:1: kernel k: expected warps from 1 to 32 (a block has at most 1024 "
            f"threads), found {warps}"
        )
    big = ir.Var(
        "big",
        parse_function(
            "kernel k(%t: tensor<f16, [4294967296]>) warps(1) {\n  %b = blocks 1:i32 : i32\n}\n"
        )
        .params[0]
        .type,
    )
    message = verify_error(replace(fn, params=(*fn.params, big)))
    assert "%big: expected tensor dimensions from 0 to 2^31 - 1, found 4294967296" in message
    tile_param = ir.Var("p", TileType(dt.f16, (4,)))
    message = verify_error(replace(fn, params=(*fn.params, tile_param)))
    assert message.startswith(
        "k.py:1:1: kernel k: expected parameter %p to be a tensor or a scalar"
    )
    float_size = ir.Var("Z", ScalarType(dt.f32))
    message = verify_error(replace(fn, sizes=(*fn.sizes, float_size)))
    assert "expected size %Z to be an integer scalar, found f32" in message
    no_sizes = replace(fn, sizes=fn.sizes[:1])
    message = verify_error(no_sizes)
    assert message.startswith(
        "k.py:1:1: kernel k: the shape of %x uses 'N', expected a size or a constexpr"
    )
    duplicate = replace(fn, sizes=(*fn.sizes, fn.sizes[0]))
    assert "%M is declared twice" in verify_error(duplicate)


def test_launch_arithmetic_may_step_a_loop():
    # A step computed from scalar parameters and sizes, even inside a loop, is known
    # before the launch; so is a negative one.
    verify(
        kernel(
            "%neg = sub 0:i32, %N : i32",
            "%o = for %k = %N to 0:i32 step %neg iter(%v: i32 = 0:i32) {",
            "  %two = mul %M, 2:i32 : i32",
            "  %inner = for %j = 0:i32 to %M step %two iter(%w: i32 = %v) {",
            "    yield %w",
            "  }",
            "  yield %inner",
            "}",
        )
    )


def test_constexpr_symbols_may_appear_in_tensor_shapes():
    text = (
        "kernel k(%s: tensor<f16, [K // G]>) sizes(%K: i32) warps(1) constexprs(G=128) {\n"
        "  %b = blocks %K : i32\n}\n"
    )
    verify(parse_function(text))


def test_every_instruction_with_operands_or_results_states_a_rule():
    for cls in ir.instruction_classes():
        # A yield's values are checked against its loop or branch, by the verifier.
        if (cls.OPERANDS or cls.RESULTS) and cls is not ir.Yield:
            assert cls.check is not ir.Instr.check, cls.__name__
