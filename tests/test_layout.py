"""Register layouts: the algebra's laws (hypothesis), hand-checked tables, errors, text form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Lark

from tilelang.ir.layout import (
    Layout,
    LayoutDivisionError,
    LayoutError,
    Rep,
    column_local,
    column_spatial,
    left_divide,
    local,
    replicated,
    spatial,
)
from tilelang.ir.layout_parser import (
    LAYOUT_GRAMMAR,
    LayoutSyntaxError,
    layout_from_tree,
    parse_layout,
)

LAWS = settings(max_examples=120, deadline=None)

MMA_C = local(2, 1).spatial(8, 4).local(1, 2)

# --------------------------------------------------------------------------- strategies

CONSTRUCTORS = {
    "local": local,
    "spatial": spatial,
    "column_local": column_local,
    "column_spatial": column_spatial,
}


@st.composite
def chains(
    draw, rank: int | None = None, max_factors: int = 3, budget: int = 256, rep: bool = True
):
    """(layout, text): a random constructor chain, and the same chain written as text.

    Sizes include 3 so that non-powers of two are exercised; `budget` bounds the product
    of all sizes (threads × locals) so tables stay small.
    """
    rank = draw(st.integers(1, 3)) if rank is None else rank
    kinds = [*CONSTRUCTORS, "replicated"] if rep else list(CONSTRUCTORS)
    layout, parts = None, []
    for _ in range(draw(st.integers(1, max_factors))):
        kind = draw(st.sampled_from(kinds))
        if kind == "replicated":
            n = draw(st.sampled_from([r for r in (2, 3) if r <= budget] or [1]))
            budget //= n
            factor, text = replicated(n, rank=rank), f"replicated({n}, rank={rank})"
        else:
            sizes = []
            for _ in range(rank):
                sizes.append(draw(st.sampled_from([s for s in (1, 2, 3, 4) if s <= budget])))
                budget //= sizes[-1]
            factor = CONSTRUCTORS[kind](*sizes)
            text = f"{kind}({', '.join(map(str, sizes))})"
        # Alternate the two spellings of composition: method chaining and `*`.
        if layout is None:
            layout = factor
        elif kind != "replicated" and draw(st.booleans()):
            layout = getattr(layout, kind)(*factor.shape)
        else:
            layout = layout * factor
        parts.append(text)
    return layout, " * ".join(parts)


def layouts(rank: int | None = None, max_factors: int = 3, budget: int = 256, rep: bool = True):
    return chains(rank, max_factors, budget, rep).map(lambda pair: pair[0])


def same_rank(count: int, max_factors: int = 2, budget: int = 24):
    return st.integers(1, 3).flatmap(
        lambda r: st.tuples(*[layouts(r, max_factors, budget) for _ in range(count)])
    )


@st.composite
def raw_layouts(draw, budget: int = 256) -> Layout:
    """Arbitrary layouts built field by field: any mode order, any split, replication anywhere."""
    rank = draw(st.integers(1, 3))
    mode_shape = []
    for _ in range(rank):
        sizes = []
        for _ in range(draw(st.integers(0, 3))):
            sizes.append(draw(st.sampled_from([s for s in (1, 2, 3, 4) if s <= budget])))
            budget //= sizes[-1]
        mode_shape.append(tuple(sizes))
    num_modes = sum(len(m) for m in mode_shape)
    order = draw(st.permutations(range(num_modes)))
    cut = draw(st.integers(0, num_modes))
    threads: list[int | Rep] = list(order[:cut])
    for r in draw(st.lists(st.sampled_from([2, 3]), max_size=2)):
        if r <= budget:
            threads.insert(draw(st.integers(0, len(threads))), Rep(r))
            budget //= r
    return Layout(
        shape=tuple(math.prod(m) for m in mode_shape),
        mode_shape=tuple(mode_shape),
        thread_modes=tuple(threads),
        local_modes=tuple(order[cut:]),
    )


def refine(layout: Layout, data: st.DataObject) -> Layout:
    """Split one mode of `layout` into two digits: the same mapping, written differently."""
    sizes = layout.mode_sizes
    splittable = [m for m, s in enumerate(sizes) if s in (4, 6, 8, 9, 12, 16)]
    if not splittable:
        return layout
    mode = data.draw(st.sampled_from(splittable))
    low = data.draw(st.sampled_from([f for f in (2, 3) if sizes[mode] % f == 0]))
    # Mode ids after `mode` shift by one; `mode` becomes (mode, mode + 1) = (high, low).
    shift = {m: m + (m > mode) for m in range(len(sizes))}

    def renumber(modes: tuple) -> tuple:
        out: list[int | Rep] = []
        for m in modes:
            if isinstance(m, Rep):
                out.append(m)
            else:
                out.extend([shift[m], shift[m] + 1] if m == mode else [shift[m]])
        return tuple(out)

    flat = [s for m, s in enumerate(sizes) for s in ((s // low, low) if m == mode else (s,))]
    mode_shape, at = [], 0
    for d, modes in enumerate(layout.mode_shape):
        count = len(modes) + (layout.mode_dims[mode] == d)
        mode_shape.append(tuple(flat[at : at + count]))
        at += count
    return Layout(
        layout.shape, tuple(mode_shape), renumber(layout.thread_modes), renumber(layout.local_modes)
    )


def flat_index(layout: Layout, table: np.ndarray | None = None) -> np.ndarray:
    """Row-major flat tile index of every (thread, local): [T, N]."""
    table = layout.table() if table is None else table
    return np.ravel_multi_index(tuple(np.moveaxis(table, -1, 0)), layout.shape)


# --------------------------------------------------------------------------- concrete tables


def test_spatial_2x2_table() -> None:
    expected = [[[0, 0]], [[0, 1]], [[1, 0]], [[1, 1]]]
    np.testing.assert_array_equal(spatial(2, 2).table(), expected)


def test_column_spatial_2x3_table() -> None:
    # Column-major: thread t holds (t % 2, t // 2).
    expected = [[[0, 0]], [[1, 0]], [[0, 1]], [[1, 1]], [[0, 2]], [[1, 2]]]
    np.testing.assert_array_equal(column_spatial(2, 3).table(), expected)


def test_local_and_column_local_tables() -> None:
    np.testing.assert_array_equal(
        local(2, 3).table(), [[[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]]
    )
    np.testing.assert_array_equal(
        column_local(2, 3).table(), [[[0, 0], [1, 0], [0, 1], [1, 1], [0, 2], [1, 2]]]
    )


def test_local_times_spatial_table() -> None:
    # local(2, 1) * spatial(1, 2): thread t, local l holds (l, t).
    layout = local(2, 1) * spatial(1, 2)
    assert layout.shape == (2, 2) and layout.num_threads == 2 and layout.num_locals == 2
    np.testing.assert_array_equal(layout.table(), [[[0, 0], [1, 0]], [[0, 1], [1, 1]]])


def test_spatial_times_local_table() -> None:
    # spatial(2, 1) * local(1, 3): thread t holds row t, its three locals the columns.
    np.testing.assert_array_equal(
        spatial(2, 1).local(1, 3).table(), [[[0, 0], [0, 1], [0, 2]], [[1, 0], [1, 1], [1, 2]]]
    )


def test_mma_c_fields_and_formula() -> None:
    assert MMA_C.shape == (16, 8) and MMA_C.num_threads == 32 and MMA_C.num_locals == 4
    canon = MMA_C.canonicalize()
    assert canon.mode_shape == ((2, 8), (4, 2))
    assert canon.thread_modes == (1, 2) and canon.local_modes == (0, 3)
    table = MMA_C.table()
    for lane in range(32):
        for i in range(4):
            row, col = table[lane, i]
            assert lane == 4 * (row % 8) + col // 2 and i == 2 * (row // 8) + col % 2


def test_replicated_table_and_counts() -> None:
    layout = spatial(2).replicated(3)
    assert layout.num_threads == 6 and layout.replication == 3 and not layout.is_bijective()
    np.testing.assert_array_equal(layout.table()[:, 0, 0], [0, 0, 0, 1, 1, 1])
    assert replicated(4, rank=2).shape == (1, 1) and replicated(4, rank=2).num_threads == 4
    assert replicated(2, rank=2).spatial(2, 1) == replicated(2, rank=2) * spatial(2, 1)


def test_owners() -> None:
    layout = spatial(2, 2).replicated(2)
    owners = layout.owners()
    assert owners.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(owners[0, 1], [[2, 0], [3, 0]])  # threads 2·1 + {0, 1}
    table = MMA_C.table()
    owners = MMA_C.owners()
    for row, col in [(0, 0), (9, 3), (15, 7)]:
        thread, loc = owners[row, col, 0]
        assert tuple(table[thread, loc]) == (row, col)


def test_equality_by_canonical_form() -> None:
    assert local(2, 1).local(1, 2) == local(2, 2)
    assert hash(local(2, 1).local(1, 2)) == hash(local(2, 2))
    assert spatial(2, 1).spatial(2, 3) == spatial(4, 3)
    assert local(1, 1) * spatial(2, 2) == spatial(2, 2)
    assert spatial(2, 2) != column_spatial(2, 2)
    assert local(2, 2) != spatial(2, 2)
    assert local(1, 4) != local(4, 1)
    assert replicated(2) * replicated(3) == replicated(6)
    assert spatial(2).replicated(2) != replicated(2).spatial(2)
    assert len({local(2, 2), local(2, 1).local(1, 2), spatial(2, 2)}) == 2


# --------------------------------------------------------------------------- laws


@LAWS
@given(same_rank(3))
def test_composition_is_associative(abc: tuple[Layout, Layout, Layout]) -> None:
    a, b, c = abc
    left, right = (a * b) * c, a * (b * c)
    assert left == right
    np.testing.assert_array_equal(left.table(), right.table())


@LAWS
@given(same_rank(2, max_factors=3, budget=64))
def test_composition_formula(ab: tuple[Layout, Layout]) -> None:
    """Kronecker: index = a·B + b, thread = t_A·T_B + t_B, local = l_A·N_B + l_B."""
    a, b = ab
    ta, tb = a.table(), b.table()
    expected = ta[:, None, :, None, :] * np.array(b.shape) + tb[None, :, None, :, :]
    expected = expected.reshape(a.num_threads * b.num_threads, a.num_locals * b.num_locals, a.rank)
    np.testing.assert_array_equal((a * b).table(), expected)


@LAWS
@given(same_rank(2, max_factors=3, budget=64))
def test_shapes_and_counts_multiply(ab: tuple[Layout, Layout]) -> None:
    a, b = ab
    c = a * b
    assert c.shape == tuple(x * y for x, y in zip(a.shape, b.shape, strict=True))
    assert c.num_threads == a.num_threads * b.num_threads
    assert c.num_locals == a.num_locals * b.num_locals
    assert c.replication == a.replication * b.replication
    assert c.num_threads * c.num_locals == c.size * c.replication


@LAWS
@given(same_rank(2, max_factors=3, budget=64))
def test_right_division_undoes_composition(ab: tuple[Layout, Layout]) -> None:
    a, b = ab
    q = (a * b) / b
    assert q == a
    np.testing.assert_array_equal((q * b).table(), (a * b).table())


@LAWS
@given(same_rank(2, max_factors=3, budget=64))
def test_left_division_undoes_composition(ab: tuple[Layout, Layout]) -> None:
    a, b = ab
    q = left_divide(b * a, b)
    assert q == a
    np.testing.assert_array_equal((b * q).table(), (b * a).table())


@LAWS
@given(same_rank(3, max_factors=2, budget=16))
def test_division_by_a_composite(abc: tuple[Layout, Layout, Layout]) -> None:
    a, b, c = abc
    whole = a * b * c
    assert whole / (b * c) == a and whole / c == a * b
    assert left_divide(whole, a * b) == c and left_divide(whole, a) == b * c


@LAWS
@given(same_rank(2, max_factors=3, budget=64), st.data())
def test_division_sound_and_complete(ab: tuple[Layout, Layout], data: st.DataObject) -> None:
    """Dividing by an unrelated layout succeeds exactly when the mapping factors.

    The only candidate quotient is Q(t, l) = L(t·T_D, l·N_D) / D.shape; when that
    candidate satisfies L = Q ⊗ D on every pair, division must succeed (completeness),
    and whenever division succeeds, Q * D must reproduce L's table (soundness).
    """
    big, divisor = ab
    big = refine(big * data.draw(layouts(big.rank, 2, 16)), data)
    factors = (
        all(x % y == 0 for x, y in zip(big.shape, divisor.shape, strict=True))
        and big.num_threads % divisor.num_threads == 0
        and big.num_locals % divisor.num_locals == 0
    )
    if factors:
        shape = np.array(divisor.shape)
        t_d, n_d = divisor.num_threads, divisor.num_locals
        table = big.table()
        base = table[::t_d, ::n_d]
        q_table = base // shape
        rebuilt = q_table[:, None, :, None] * shape + divisor.table()[None, :, None, :]
        rebuilt = rebuilt.reshape(table.shape)
        factors = bool(np.all(base % shape == 0)) and np.array_equal(rebuilt, table)
    if factors:
        quotient = big / divisor
        np.testing.assert_array_equal((quotient * divisor).table(), big.table())
        assert quotient * divisor == big
    else:
        with pytest.raises(LayoutDivisionError):
            big / divisor


@LAWS
@given(raw_layouts())
def test_canonicalize_keeps_the_mapping(layout: Layout) -> None:
    canon = layout.canonicalize()
    np.testing.assert_array_equal(canon.table(), layout.table())
    assert canon == layout and canon.canonicalize() == canon
    assert 1 not in canon.mode_sizes and Rep(1) not in canon.thread_modes


@LAWS
@given(raw_layouts(), st.data())
def test_refined_layouts_are_equal(layout: Layout, data: st.DataObject) -> None:
    """Equality is of mappings: splitting a mode into two digits changes nothing."""
    refined = refine(refine(layout, data), data)
    np.testing.assert_array_equal(refined.table(), layout.table())
    assert refined == layout and hash(refined) == hash(layout)
    assert str(refined) == str(layout)


@LAWS
@given(layouts(rep=False))
def test_without_replication_a_bijection(layout: Layout) -> None:
    assert layout.replication == 1
    flat = flat_index(layout).ravel()
    assert len(flat) == layout.size and len(np.unique(flat)) == layout.size
    assert layout.is_bijective()


@LAWS
@given(raw_layouts())
def test_every_element_held_replication_times(layout: Layout) -> None:
    counts = np.bincount(flat_index(layout).ravel(), minlength=layout.size)
    assert np.all(counts == layout.replication)
    assert layout.is_bijective() == (layout.replication == 1)
    owners = layout.owners()
    assert owners.shape == (*layout.shape, layout.replication, 2)
    held = layout.table()[owners[..., 0], owners[..., 1]]  # [*shape, R, rank]
    grid = np.stack(np.indices(layout.shape), axis=-1)[..., None, :]
    np.testing.assert_array_equal(held, np.broadcast_to(grid, held.shape))


# --------------------------------------------------------------------------- reduce / permute / reshape


def test_reduce_makes_replication() -> None:
    reduced = spatial(8, 4).reduce(1)
    assert reduced.shape == (8, 1) and reduced.replication == 4 and reduced.num_threads == 32
    np.testing.assert_array_equal(reduced.table()[:, 0, 0], np.arange(32) // 4)
    assert reduced == spatial(8, 1).replicated(4)
    assert spatial(8, 4).reduce(1, keepdims=False) == spatial(8).replicated(4)
    # Local modes of a reduced dim vanish.
    assert MMA_C.reduce(1) == local(2, 1).spatial(8, 1).replicated(4)
    assert MMA_C.reduce([0, 1]).num_locals == 1
    assert MMA_C.reduce(-1) == MMA_C.reduce(1)


@LAWS
@given(raw_layouts(), st.data())
def test_reduce_keeps_thread_to_element_relation(layout: Layout, data: st.DataObject) -> None:
    dims = data.draw(st.lists(st.integers(0, layout.rank - 1), unique=True))
    keepdims = data.draw(st.booleans())
    reduced = layout.reduce(dims, keepdims=keepdims)
    assert reduced.num_threads == layout.num_threads
    keep = [d for d in range(layout.rank) if d not in dims]

    def held(lay: Layout, columns: list[int]) -> np.ndarray:
        table = lay.table()[..., columns]
        threads = np.broadcast_to(np.arange(lay.num_threads)[:, None, None], (*table.shape[:2], 1))
        return np.unique(
            np.concatenate([threads, table], axis=-1).reshape(-1, 1 + len(columns)), axis=0
        )

    before = held(layout, keep)
    after = held(reduced, keep if keepdims else list(range(len(keep))))
    np.testing.assert_array_equal(before, after)
    if keepdims:
        assert all(reduced.shape[d] == 1 for d in dims)
    else:
        assert reduced.shape == tuple(layout.shape[d] for d in keep)


def test_permute() -> None:
    assert spatial(2, 3).permute((1, 0)) == column_spatial(3, 2)
    assert MMA_C.permute([1, 0]) == local(1, 2).column_spatial(4, 8).local(2, 1)
    with pytest.raises(LayoutError, match="permutation"):
        MMA_C.permute((0, 0))


@LAWS
@given(raw_layouts(), st.data())
def test_permute_moves_indices(layout: Layout, data: st.DataObject) -> None:
    perm = data.draw(st.permutations(range(layout.rank)))
    permuted = layout.permute(perm)
    np.testing.assert_array_equal(permuted.table(), layout.table()[..., list(perm)])
    assert permuted.permute(list(np.argsort(perm))) == layout


def test_reshape() -> None:
    assert spatial(4, 4).reshape((16,)) == spatial(16)
    assert spatial(3, 2).reshape((2, 3)) == spatial(2, 3)
    assert MMA_C.reshape((128,)) == local(2).spatial(32).local(2)
    assert MMA_C.reshape((2, 8, 8)) == local(2, 1, 1).spatial(1, 8, 4).local(1, 1, 2)
    with pytest.raises(LayoutError, match="2 does not divide 3"):
        spatial(2, 1).local(1, 3).reshape((3, 2))
    with pytest.raises(LayoutError, match="sizes differ"):
        spatial(2, 2).reshape((8,))


@LAWS
@given(raw_layouts(), st.data())
def test_reshape_keeps_flat_indices(layout: Layout, data: st.DataObject) -> None:
    """Where a reshape exists it keeps every pair's row-major flat index."""
    sizes = [f for f in (2, 3, 4, 6) if layout.size % f == 0]
    first = data.draw(st.sampled_from(sizes)) if sizes else 1
    new_shape = (first, layout.size // first)
    try:
        reshaped = layout.reshape(new_shape)
    except LayoutError as err:
        assert "cannot reshape" in str(err)
        return
    assert reshaped.shape == new_shape
    np.testing.assert_array_equal(flat_index(reshaped), flat_index(layout))
    assert reshaped.reshape(layout.shape) == layout


# --------------------------------------------------------------------------- division errors


def test_division_examples() -> None:
    assert MMA_C / spatial(8, 4).local(1, 2) == local(2, 1)
    assert MMA_C / local(1, 2) == local(2, 1).spatial(8, 4)
    assert left_divide(MMA_C, local(2, 1)) == spatial(8, 4).local(1, 2)
    # The divisor's mode is a low part of a larger mode: local(2, 2) / local(1, 2).
    assert local(2, 4) / local(1, 2) == local(2, 2)
    assert spatial(8).replicated(4) / replicated(2) == spatial(8).replicated(2)
    assert MMA_C.divisible_by(spatial(4, 4).local(1, 2))
    assert not MMA_C.divisible_by(spatial(8, 4))


@pytest.mark.parametrize(
    ("layout", "divisor", "message"),
    [
        (MMA_C, spatial(8, 4), r"dim 1: .*innermost modes of the layout's dim 1"),
        (local(4), local(3), r"dim 0 has size 4, not a multiple of the divisor's 3"),
        (spatial(4), local(2), r"1 locals is not a multiple of the divisor's 2 locals"),
        (spatial(2, 2), column_spatial(2, 2), r"thread digit 1 .* dim 0, the layout has .* dim 1"),
        (
            spatial(4).replicated(2),
            spatial(2),
            r"the divisor has a size-2 mode of dim 0, the layout has replication x2",
        ),
        (spatial(6), spatial(4), r"size 6, not a multiple of the divisor's 4"),
        (spatial(2, 6), spatial(1, 4).replicated(3), r"dim 1 has size 6"),
        (local(2, 2), local(2), r"ranks differ"),
    ],
)
def test_division_errors_say_why(layout: Layout, divisor: Layout, message: str) -> None:
    with pytest.raises(LayoutDivisionError, match=message):
        layout / divisor


def test_left_division_error_says_outermost() -> None:
    with pytest.raises(LayoutDivisionError, match=r"left-divide .*outermost"):
        left_divide(MMA_C, local(1, 2))
    assert issubclass(LayoutDivisionError, ValueError)


# --------------------------------------------------------------------------- constructor errors


def test_constructor_errors() -> None:
    with pytest.raises(LayoutError, match="positive"):
        local(0, 2)
    with pytest.raises(LayoutError, match="int"):
        spatial(2.5)  # type: ignore[arg-type]
    with pytest.raises(LayoutError, match="ranks must match"):
        local(2) * spatial(2, 2)
    with pytest.raises(LayoutError, match="exactly once"):
        Layout((4,), ((2, 2),), (0,), ())
    with pytest.raises(LayoutError, match="multiply to"):
        Layout((4,), ((2, 3),), (0, 1), ())
    with pytest.raises(LayoutError, match="replication factor"):
        replicated(0)


# --------------------------------------------------------------------------- text form


def test_printing_prefers_chains() -> None:
    assert str(MMA_C) == "local(2, 1).spatial(8, 4).local(1, 2)"
    assert repr(MMA_C) == str(MMA_C)
    assert str(local(2, 1).local(1, 2)) == "local(2, 2)"
    assert str(local(1, 1)) == "local(1, 1)"
    assert str(column_spatial(2, 3, 4)) == "column_spatial(2, 3, 4)"
    assert str(replicated(2, rank=2).spatial(2, 2)) == "replicated(2, rank=2).spatial(2, 2)"
    assert str(spatial(8, 4).reduce(1)) == "spatial(8, 1).replicated(4)"


def test_general_form() -> None:
    # Thread t holds element 2·(t % 2) + t // 2: a transposed digit order, no chain.
    layout = Layout((4,), ((2, 2),), (1, 0), ())
    text = "layout(shape=[4], modes=[[2, 2]], threads=[1, 0], locals=[])"
    assert str(layout) == text and parse_layout(text) == layout
    np.testing.assert_array_equal(layout.table()[:, 0, 0], [0, 2, 1, 3])
    with_rep = Layout((2, 4), ((2,), (2, 2)), (Rep(2), 2, 1), (0,))
    assert (
        str(with_rep)
        == "layout(shape=[2, 4], modes=[[2], [2, 2]], threads=[rep(2), 2, 1], locals=[0])"
    )
    assert parse_layout(str(with_rep)) == with_rep


@LAWS
@given(chains())
def test_text_round_trip_of_chains(pair: tuple[Layout, str]) -> None:
    layout, text = pair
    assert parse_layout(text) == layout  # the test's own spelling, with `*`
    printed = str(layout)
    assert not printed.startswith("layout("), printed  # a chain prints as a chain
    back = parse_layout(printed)
    assert back == layout
    np.testing.assert_array_equal(back.table(), layout.table())


@LAWS
@given(raw_layouts())
def test_text_round_trip_of_any_layout(layout: Layout) -> None:
    back = parse_layout(str(layout))
    assert back == layout and str(back) == str(layout)
    np.testing.assert_array_equal(back.table(), layout.table())


def test_parse_spellings() -> None:
    assert parse_layout("local(2,1)*spatial(8,4)*local(1,2)") == MMA_C
    assert parse_layout("(local(2, 1) * spatial(8, 4)).local(1, 2)") == MMA_C
    assert parse_layout("  local(2, 1) .spatial(8, 4)\n.local(1, 2) ") == MMA_C
    assert parse_layout("replicated(4)") == replicated(4)
    assert parse_layout("spatial(2, 2).replicated(2)") == spatial(2, 2).replicated(2)
    assert parse_layout("local()") == local()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("local(2, 1", r"column 11: expected one of '\)', ',', found end of input"),
        ("local(2,,1)", r"column 9: expected an integer, found ','"),
        ("foo(2)", r"column 1: expected one of .*'local'.*found 'foo'"),
        ("local(2) extra", r"column 10: .*found 'extra'"),
        ("spatial(2).local(1, 2)", r"column 12: .local\(1, 2\) has rank 2, its receiver rank 1"),
        ("local(2) * spatial(2, 2)", r"column 12: cannot compose rank 1 with rank 2"),
        ("local(0)", r"column 1: layout size must be positive"),
        ("replicated(2, rank=2).replicated(2, rank=3)", r"rank=3, its receiver has rank 2"),
        (
            "layout(shape=[4], modes=[[2, 3]], threads=[0, 1], locals=[])",
            r"modes \[2, 3\] multiply to 6",
        ),
        ("layout(shape=[4], modes=[[2, 2]], threads=[0], locals=[])", r"mode 1 appears in neither"),
        (
            "layout(shape=[4], modes=[[4]], threads=[0], locals=[0])",
            r"mode 0 appears in more than once",
        ),
        ("layout(shape=[4], modes=[[4]], threads=[1], locals=[])", r"mode id 1 is out of range"),
        ("layout(shape=[2], modes=[[2]], locals=[0])", r"expected 'threads', found 'locals'"),
        ("", r"empty layout text"),
    ],
)
def test_malformed_text(text: str, message: str) -> None:
    with pytest.raises(LayoutSyntaxError, match=message) as info:
        parse_layout(text)
    assert isinstance(info.value, ValueError)
    if text:
        assert info.value.column is not None and "^" in str(info.value)  # a caret under the spot


def test_grammar_embeds_in_a_larger_grammar() -> None:
    grammar = (
        'start: "tile" "<" layout_expr ">"\n' + LAYOUT_GRAMMAR + "%import common.WS\n%ignore WS\n"
    )
    parser = Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)
    tree = parser.parse("tile<local(2, 1).spatial(8, 4).local(1, 2)>")
    assert layout_from_tree(tree.children[0]) == MMA_C
    with pytest.raises(LayoutSyntaxError, match="column 20"):
        layout_from_tree(parser.parse("tile<local(2, 1) * local(2)>").children[0])


from tilelang.ir.fragments import permute_locals  # noqa: E402

# -- permute_locals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [
        local(1, 8),
        spatial(4, 8).local(2, 4),
        local(4, 1).column_local(2, 2).column_spatial(4, 8).local(2, 1),  # an mma B fragment
    ],
    ids=str,
)
def test_permuting_local_digits_keeps_each_threads_elements(layout):
    """permute_locals((4, 2), (1, 0)): the innermost 8 locals as digits (j, h), reordered
    (h, j) — old local 2j + h becomes new local 4h + j; every thread holds the same
    elements, the other locals stay where they were."""
    permuted = permute_locals(layout, (4, 2), (1, 0))
    old, new = layout.table(), permuted.table()
    for local_index in range(layout.num_locals):
        outer, inner = divmod(local_index, 8)
        j, h = divmod(inner, 2)
        assert np.array_equal(new[:, outer * 8 + 4 * h + j], old[:, local_index])


def test_permuting_local_digits_that_do_not_exist_is_an_error():
    with pytest.raises(LayoutError, match="fewer than"):
        permute_locals(local(1, 4), (4, 2), (1, 0))
    with pytest.raises(LayoutError, match="neither made of whole"):
        permute_locals(local(2, 3), (3, 2), (1, 0))  # a size-3 mode gives no digit of 2
    with pytest.raises(LayoutError, match="not a permutation"):
        permute_locals(local(1, 8), (4, 2), (0, 0))
