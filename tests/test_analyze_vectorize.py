"""Function.assume, and the passes analyze and vectorize, as text in / text out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tilelang.ir.parser import IRSyntaxError, parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.verify import verify
from tilelang.passes import analyze, vectorize


def kernel(params: str, sizes: str, body: str, assume: str = "") -> str:
    facts = f" assume({assume})" if assume else ""
    return f"kernel k({params}) sizes({sizes}) warps(4){facts} {{\n{body}}}\n"


def run(pass_module, text: str) -> list[str]:
    """The body lines (stripped) of `text` after the pass; the input must verify."""
    fn = parse_function(text)
    verify(fn)
    out = pass_module.run(fn)
    verify(out)
    return [line.strip() for line in print_function(out).splitlines()[1:-1]]


def attrs_of(lines: list[str], start: str) -> str:
    """The `{...}` attribute text of the one line starting with `start`."""
    (line,) = [line for line in lines if line.startswith(start)]
    return line[line.index("{") + 1 : line.index("}")]


# -- Function.assume -------------------------------------------------------------------------


ASSUMING = kernel(
    "%x: tensor<f16, [M, K]>",
    "%M: i32, %K: i32",
    "  %bm = blocks %M : i32\n",
    assume="K % 16, M % 8",
)


def test_assume_round_trips_in_the_header():
    fn = parse_function(ASSUMING)
    assert fn.assume == (("K", 16), ("M", 8))
    text = print_function(fn)
    assert text.splitlines()[0].endswith("warps(4) assume(K % 16, M % 8) {")
    assert parse_function(text) == fn
    assert parse_function(text.replace(" assume(K % 16, M % 8)", "")) == replace(fn, assume=())


def test_assume_comes_before_constexprs():
    text = ASSUMING.replace("M % 8)", "M % 8) constexprs(BM=16)")
    fn = parse_function(text)
    assert fn.constexprs == (("BM", 16),)
    assert print_function(fn) == text


def test_size_divisor():
    fn = parse_function(ASSUMING)
    assert analyze.size_divisor(fn, "K") == 16
    assert analyze.size_divisor(fn, "M") == 8
    assert analyze.size_divisor(fn, "N") == 1


@pytest.mark.parametrize(
    ("fact", "message"),
    [
        ("K % 12", "line 1, column 79: expected a power of two up to 65536, found 12"),
        ("Q % 16", "line 1, column 1: assume(Q % 16): Q is not a size of the kernel"),
    ],
)
def test_bad_assume_is_a_syntax_error(fact, message):
    with pytest.raises(IRSyntaxError) as err:
        parse_function(ASSUMING.replace("K % 16", fact))
    assert str(err.value).startswith(message)


def test_function_checks_assume():
    fn = parse_function(ASSUMING)
    with pytest.raises(ValueError, match="power of two"):
        replace(fn, assume=(("K", 3),))
    with pytest.raises(ValueError, match="N is not a size"):
        replace(fn, assume=(("N", 4),))


def test_shape_divisor():
    fn = parse_function(ASSUMING)
    from tilelang.ir.shape_expr import parse_shape_expr as e

    assert analyze.shape_divisor(fn, e("K")) == 16
    assert analyze.shape_divisor(fn, e("96")) == 32
    assert analyze.shape_divisor(fn, e("K * M")) == 128
    assert analyze.shape_divisor(fn, e("K + 8")) == 8
    assert analyze.shape_divisor(fn, e("K // 4")) == 4  # exact
    assert analyze.shape_divisor(fn, e("(K + 127) // 128")) == 1
    assert analyze.shape_divisor(fn, e("K // 3")) == 1


# -- analyze ----------------------------------------------------------------------------------

ARITHMETIC = kernel(
    "%x: tensor<i32, [M, N]>, %s: i32",
    "%M: i32, %N: i32",
    "  %bm, %bn = blocks %M, %N : i32, i32\n"
    "  %a = mul %bm, 64:i32 : i32\n"
    "  %b = add %a, %N : i32\n"
    "  %c = shl %bn, 4:i32 : i32\n"
    "  %d = div %a, 16:i32 : i32\n"
    "  %e = div %a, 3:i32 : i32\n"
    "  %f = rem %a, 32:i32 : i32\n"
    "  %g = mul %s, %N : i32\n"
    "  %h = sub %c, 48:i32 : i32\n"
    "  %i = and %bn, -4:i32 : i32\n"
    "  %w = cast %a : i64\n"
    "  %w8 = cast %a : u8\n"
    "  %sh = shr %a, 2:i32 : i32\n"
    "  %cond = lt %bm, %bn : u1\n"
    "  %v = if %cond -> (i32) {\n"
    "    yield %a\n"
    "  } else {\n"
    "    yield %c\n"
    "  }\n"
    "  %r = for %k = 32:i32 to %N step 64:i32 iter(%acc: i32 = 0:i32) {\n"
    "    %j = for %l = %k to %N step 128:i32 iter(%q: i32 = 256:i32) {\n"
    "      %q1 = add %q, 64:i32 : i32\n"
    "      yield %q1\n"
    "    }\n"
    "    %acc_1 = add %acc, 48:i32 : i32\n"
    "    %t = full 0:i32 : tile<i32, [1, 4]>\n"
    "    store %x[%k, %acc_1], %t\n"
    "    yield %acc_1\n"
    "  }\n"
    "  %t2 = full 0:i32 : tile<i32, [1, 4]>\n"
    "  store %x[%b, %r], %t2\n"
    "  %t3 = load %x[%e, %d] : tile<i32, [1, 4]>\n"
    "  store %x[%v, 0:i32], %t3\n",
    assume="N % 8",
)


def test_analyze_divisors():
    facts = analyze.analyze(parse_function(ARITHMETIC))
    by_name = {var.name: divisor for var, divisor in facts.items()}
    assert by_name == {
        "s": 1,  # a kernel scalar: unknown
        "M": 1,
        "N": 8,  # assume(N % 8)
        "bm": 1,  # block indices: unknown
        "bn": 1,
        "a": 64,  # bm * 64
        "b": 8,  # 64-multiple + 8-multiple
        "c": 16,  # bn << 4
        "d": 4,  # an exact division by 16
        "e": 1,  # division by 3
        "f": 32,  # a rem 32 = a - 32·q
        "g": 8,  # 1 · 8
        "h": 16,
        "i": 4,  # and with a multiple of 4
        "w": 64,  # widening cast
        "w8": 1,  # saturating narrowing cast
        "sh": 16,  # 64 >> 2
        "cond": 1,
        "v": 16,  # min of the two branches
        "k": 32,  # 32 + i·64
        "l": 32,  # k + i·128
        "q": 64,  # fixpoint: 256, then 256 + 64·i
        "q1": 64,
        "j": 64,
        "acc": 16,  # fixpoint: 0 (every power of two), then 48·i
        "acc_1": 16,
        "r": 16,
    }
    assert facts.divisor(parse_function(ARITHMETIC).sizes[1]) == 8


def test_analyze_annotates_offsets():
    lines = run(analyze, ARITHMETIC)
    assert attrs_of(lines, "store %x[%k, %acc_1]") == 'divisors="32,16"'
    assert attrs_of(lines, "store %x[%b, %r]") == 'divisors="8,16"'
    assert attrs_of(lines, "%t3 = load") == 'divisors="1,4"'
    assert attrs_of(lines, "store %x[%v, 0:i32]") == 'divisors="16,65536"'  # 0: the cap
    assert sum("divisors=" in line for line in lines) == 4  # nothing else changes
    assert print_function(analyze.run(parse_function(ARITHMETIC))).count("{divisors=") == 4


def test_narrow_types_cap_the_divisor():
    text = kernel(
        "%x: tensor<i32, [N]>",
        "%N: i32",
        "  %b = blocks %N : i32\n"
        "  %c = cast %b : i8\n"
        "  %d = mul %c, 64:i8 : i8\n"
        "  %e = shl %d, 4:i8 : i8\n",
    )
    facts = analyze.analyze(parse_function(text))
    assert {v.name: d for v, d in facts.items() if v.name in "cde"} == {
        "c": 1,  # saturating cast to i8
        "d": 64,
        "e": 256,  # 64·16 wraps to 0 mod 256: every value divisible by 2**8
    }


# -- vectorize ---------------------------------------------------------------------------------

F16_LOAD = kernel(
    "%x: tensor<f16, [M, K]>",
    "%M: i32, %K: i32",
    "  %bm = blocks %M : i32\n"
    "  %row = mul %bm, 16:i32 : i32\n"
    "  for %k = 0:i32 to %K step 64:i32 {\n"
    "    %a = load %x[%row, %k] : tile<f16, [16, 64], spatial(16, 8).local(1, 8)>\n"
    "    yield\n"
    "  }\n",
)


def test_f16_rows_of_8_with_assume_are_16_byte_vectors():
    text = F16_LOAD.replace("warps(4)", "warps(4) assume(K % 16)")
    assert attrs_of(run(vectorize, text), "%a = load") == "align=16, elems=8, vector=16"


def test_without_assume_the_mask_is_not_constant_over_a_run():
    # K could be odd: a row may end inside any run longer than one element.
    assert attrs_of(run(vectorize, F16_LOAD), "%a = load") == "align=2, elems=1, vector=2"


def test_a_literal_row_length_is_known_exactly():
    text = F16_LOAD.replace("[M, K]", "[M, 40]")
    # 40 = 8·5: runs of 8 never straddle a row end; the row stride is 80 bytes.
    assert attrs_of(run(vectorize, text), "%a = load") == "align=16, elems=8, vector=16"
    text = F16_LOAD.replace("[M, K]", "[M, 36]")
    # runs of 4 (8 bytes); rows start at multiples of 72 bytes: 8-aligned
    assert attrs_of(run(vectorize, text), "%a = load") == "align=8, elems=4, vector=8"


def test_the_offset_limits_the_run():
    text = F16_LOAD.replace("step 64:i32", "step 4:i32").replace(
        "warps(4)", "warps(4) assume(K % 16)"
    )
    assert attrs_of(run(vectorize, text), "%a = load") == "align=8, elems=4, vector=8"


def weight_load(dtype: str, assume: str) -> str:
    return kernel(
        f"%w: tensor<{dtype}, [K, N]>",
        "%K: i32, %N: i32",
        "  %bn = blocks %N : i32\n"
        "  %col = mul %bn, 64:i32 : i32\n"
        "  for %k = 0:i32 to %K step 64:i32 {\n"
        f"    %q = load %w[%k, %col] : tile<{dtype}, [64, 64], spatial(64, 2).local(1, 32)>\n"
        "    yield\n"
        "  }\n",
        assume,
    )


@pytest.mark.parametrize(
    ("dtype", "assume", "expected"),
    [
        # u4, N % 16: runs of 16 codes (8 bytes); element offsets are multiples of 16
        # (row stride N, column 64·bn + 16j), i.e. 64 bits: 8-byte aligned.
        ("u4", "N % 16", "align=8, elems=16, vector=8"),
        # N % 32: a thread's 32 codes are one 16-byte run, 16-byte aligned.
        ("u4", "N % 32", "align=16, elems=32, vector=16"),
        # u3, N % 16: 16 codes are 48 bits, a 6-byte run; run starts at multiples of
        # 16 codes = 48 bits = 6 bytes: 2-byte aligned.
        ("u3", "N % 16", "align=2, elems=16, vector=6"),
        ("u3", "N % 32", "align=4, elems=32, vector=12"),
        ("u1", "N % 16", "align=2, elems=16, vector=2"),
        # f16: 32 consecutive values per thread, but one access is at most 16 bytes.
        ("f16", "N % 8", "align=16, elems=8, vector=16"),
        ("f8e4m3", "N % 8", "align=8, elems=8, vector=8"),
        ("f6e3m2", "N % 16", "align=4, elems=16, vector=12"),
    ],
)
def test_low_bit_weight_runs(dtype, assume, expected):
    assert attrs_of(run(vectorize, weight_load(dtype, assume)), "%q = load") == expected


def test_sub_byte_runs_shorter_than_a_byte():
    text = weight_load("u4", "N % 16").replace("spatial(64, 2).local(1, 32)", "spatial(2, 64)")
    # one u4 per thread: half a byte (vector=0), starts on half-byte boundaries (align=0)
    assert attrs_of(run(vectorize, text), "%q = load") == "align=0, elems=1, vector=0"


def store_of(layout: str, shape: str = "[16, 8]", dtype: str = "f32") -> str:
    return kernel(
        f"%y: tensor<{dtype}, [M, N]>",
        "%M: i32, %N: i32",
        "  %bm, %bn = blocks %M, %N : i32, i32\n"
        "  %row = mul %bm, 16:i32 : i32\n"
        "  %col = mul %bn, 8:i32 : i32\n"
        f"  %c = full 0.0:{dtype} : tile<{dtype}, {shape}, {layout}>\n"
        "  store %y[%row, %col], %c\n",
        "N % 8",
    )


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        # the mma C fragment: pairs of columns, run starts at even columns
        ("local(2, 1).spatial(8, 4).local(1, 2)", "align=8, elems=2, vector=8"),
        # the innermost local digit walks down a column: runs of one element
        ("spatial(1, 8).local(16, 1)", "align=4, elems=1, vector=4"),
        # column_local: local index digit order is column-major: runs of one element
        ("spatial(2, 4).column_local(8, 2)", "align=4, elems=1, vector=4"),
        # consecutive in a row but threads own every other pair: runs of 2
        ("local(1, 2).spatial(16, 2).local(1, 2)", "align=8, elems=2, vector=8"),
    ],
)
def test_store_runs_follow_the_layout(layout, expected):
    assert attrs_of(run(vectorize, store_of(layout)), "store") == expected


def test_runs_that_are_not_powers_of_two_split_evenly():
    text = kernel(
        "%y: tensor<u4, [M, N]>",
        "%M: i32, %N: i32",
        "  %bm = blocks %M : i32\n"
        "  %c = full 0:u4 : tile<u4, [16, 48], spatial(16, 2).local(1, 24)>\n"
        "  store %y[%bm, 0:i32], %c\n",
        "N % 64",
    )
    # a thread's 24 codes split into runs of 8 (the largest power of two dividing 24),
    # starting at columns 0, 8, ..., 40: 32-bit aligned
    assert attrs_of(run(vectorize, text), "store") == "align=4, elems=8, vector=4"


def test_replicated_and_single_row_tiles():
    text = kernel(
        "%s: tensor<f16, [G, N]>",
        "%G: i32, %N: i32",
        "  %bn = blocks %N : i32\n"
        "  %col = mul %bn, 64:i32 : i32\n"
        "  %g = load %s[0:i32, %col] : tile<f16, [1, 64], spatial(1, 8).local(1, 8).replicated(16)>\n",
        "N % 64",
    )
    assert attrs_of(run(vectorize, text), "%g = load") == "align=16, elems=8, vector=16"


def copy_into(shared: str, assume: str = "K % 16") -> str:
    return kernel(
        "%x: tensor<f16, [M, K]>",
        "%M: i32, %K: i32",
        "  %bm = blocks %M : i32\n"
        "  %row = mul %bm, 64:i32 : i32\n"
        f"  %sa = shared_alloc : {shared}\n"
        "  for %k = 0:i32 to %K step 64:i32 {\n"
        "    copy_async %x[%row, %k] -> %sa\n"
        "    async_commit\n"
        "    yield\n"
        "  }\n",
        assume,
    )


@pytest.mark.parametrize(
    ("shared", "assume", "expected"),
    [
        # no layout yet: plan_shared's (row-major, 128-byte swizzle keeps 16-byte chunks)
        ("shared<f16, [64, 64]>", "K % 16", "align=16, elems=8, vector=16"),
        ("shared<f16, [64, 64]>", "", "align=2, elems=1, vector=2"),
        # padded rows of 72 elements: chunk starts stay 16-byte aligned
        ("shared<f16, [64, 64], shared(64:72, 64:1)>", "K % 16", "align=16, elems=8, vector=16"),
        # rows of 68 elements: chunk starts only 8-byte aligned in shared memory
        ("shared<f16, [64, 64], shared(64:68, 64:1)>", "K % 16", "align=8, elems=8, vector=16"),
        # column-major: no two row neighbours are adjacent in shared memory
        ("shared<f16, [64, 64], shared(64:1, 64:64)>", "K % 16", "align=2, elems=1, vector=2"),
        # a swizzle on 4-element (8-byte) chunks caps the run at 4
        (
            "shared<f16, [64, 64], shared(64:64, 64:1) ^ swizzle(3, 2, 6)>",
            "K % 16",
            "align=8, elems=4, vector=8",
        ),
    ],
)
def test_copy_async_runs(shared, assume, expected):
    assert attrs_of(run(vectorize, copy_into(shared, assume)), "copy_async") == expected


def test_layout_run():
    from tilelang.ir.layout_parser import parse_layout

    assert vectorize.layout_run(parse_layout("spatial(16, 8).local(1, 8)")) == 8
    assert vectorize.layout_run(parse_layout("local(1, 2).local(1, 4)")) == 8
    assert vectorize.layout_run(parse_layout("local(2, 1).spatial(8, 4).local(1, 2)")) == 2
    assert vectorize.layout_run(parse_layout("spatial(4, 8).local(2, 1)")) == 1
    assert vectorize.layout_run(parse_layout("local(4, 1)")) == 1  # [4, 1]: no row
    assert vectorize.layout_run(None) == 1


def test_vectorize_only_adds_attributes():
    text = F16_LOAD.replace("warps(4)", "warps(4) assume(K % 16)")
    fn = parse_function(text)
    out = vectorize.run(fn)
    stripped = print_function(out).replace(" {align=16, elems=8, vector=16}", "")
    assert stripped == print_function(fn)


def packed_run(dtype: str, codes: int, body: str) -> str:
    """A kernel over a [R, C] tensor of `dtype` whose box [1, codes] at [row, k·codes]
    `body` reads (sizes multiples of 128)."""
    return kernel(
        f"%w: tensor<{dtype}, [R, C]>",
        "%R: i32, %C: i32",
        "  %bm = blocks %R : i32\n"
        f"  for %k = 0:i32 to %C step {codes}:i32 {{\n" + body + "    yield\n  }\n",
        "C % 128, R % 128",
    )


@pytest.mark.parametrize(
    ("dtype", "codes", "layout", "expected"),
    [
        # a fragment's load order: 32 u5 codes a thread, 20 bytes from 20-byte boundaries,
        # one run moved in five 4-byte accesses (runs of 16 codes would be 2-byte aligned)
        ("u5", 4096, "spatial(1, 128).local(1, 32)", "align=4, elems=32, vector=20"),
        # 128 u3 codes a thread: three 16-byte words, 16-byte aligned
        ("u3", 16384, "spatial(1, 128).local(1, 128)", "align=16, elems=128, vector=48"),
        # two 16-byte runs of u8 a thread: each its own run (the layout's innermost digit)
        ("u8", 4096, "local(1, 2).spatial(1, 128).local(1, 16)", "align=16, elems=16, vector=16"),
    ],
)
def test_register_runs_may_span_several_accesses(dtype, codes, layout, expected):
    body = f"    %q = load %w[%bm, %k] : tile<{dtype}, [1, {codes}], {layout}>\n"
    assert attrs_of(run(vectorize, packed_run(dtype, codes, body)), "%q = load") == expected


@pytest.mark.parametrize(
    ("dtype", "codes", "expected"),
    [
        # 128 threads, 16384 u3 codes: a 48-byte run (three 16-byte copies) for each thread
        ("u3", 16384, "align=16, elems=128, vector=48"),
        # 4096 codes would leave three threads in four idle: 12-byte runs, 4-byte copies
        ("u3", 4096, "align=4, elems=32, vector=12"),
        ("u5", 16384, "align=16, elems=128, vector=80"),
        ("u4", 16384, "align=16, elems=32, vector=16"),  # 4 | 128: one 16-byte word
    ],
)
def test_copy_runs_of_whole_words_for_widths_that_do_not_divide_128(dtype, codes, expected):
    body = f"    %sa = shared_alloc : shared<{dtype}, [1, {codes}]>\n"
    body += "    copy_async %w[%bm, %k] -> %sa\n    async_commit\n"
    assert attrs_of(run(vectorize, packed_run(dtype, codes, body)), "copy_async") == expected
