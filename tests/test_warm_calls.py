"""Warm GPU calls (`tilelang.runtime.warm_calls`), with the driver stubbed: a call on
device tensors like the last ones launches exactly what the full call launched, at the
new addresses, and anything that could make the call wrong goes the full way."""

import importlib
import math

import pytest
from conftest import load_example
from hypothesis import given
from hypothesis import strategies as st

import tilelang as tl
from tilelang import dtypes
from tilelang.runtime import arguments, gpu, value_facts, warm_calls
from tilelang.runtime.arguments import ranges_overlap


class DeviceTensor:
    """A GPU tensor as `__cuda_array_interface__` describes it."""

    def __init__(self, pointer, shape=(5000,), typestr="<f4"):
        self.__cuda_array_interface__ = {
            "data": (pointer, False), "shape": shape, "typestr": typestr, "version": 3,
        }  # fmt: skip


@pytest.fixture
def launches(monkeypatch):
    """Every launch, and how many calls went the full way (bound their arguments)."""
    seen = {"launches": [], "full": 0}
    bind_device = arguments.ArgumentBinder.bind_device

    def counted(self, values):
        seen["full"] += 1
        return bind_device(self, values)

    monkeypatch.setattr(arguments.ArgumentBinder, "bind_device", counted)
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_80")
    monkeypatch.setattr(gpu, "current_stream", lambda tensors: 3)
    monkeypatch.setattr(
        gpu, "launch", lambda build, *args: seen["launches"].append((build.symbol, *args))
    )
    return seen


def fresh_vector_add():
    source = load_example("vector_add").vector_add
    return tl.kernel(source.fn, warps=source.warps)


def tensors(base, shape=(5000,)):
    return [DeviceTensor(base + i * 0x100000, shape) for i in range(3)]


def test_a_warm_call_launches_what_the_full_call_did_at_the_new_addresses(launches):
    vector_add = fresh_vector_add()
    first = tensors(0x7F0000000000)
    assert vector_add(*first) is first[2]
    second = tensors(0x7F0010000000)
    assert vector_add(*second) is second[2]
    assert launches["full"] == 1  # the second call was warm
    cold, warm = launches["launches"]
    assert warm[2:] == cold[2:] and warm[0] == cold[0]  # scalars, grid, stream, build
    assert warm[1] == {"x": 0x7F0010000000, "y": 0x7F0010100000, "out": 0x7F0010200000}
    assert cold[2] == {"N": 5000} and tuple(cold[3]) == (5,)


def test_another_shape_or_constexpr_goes_the_full_way(launches):
    vector_add = fresh_vector_add()
    vector_add(*tensors(0x7F0000000000))
    vector_add(*tensors(0x7F0000000000, (3000,)))
    vector_add(*tensors(0x7F0000000000), BLOCK=512)
    assert launches["full"] == 3
    grids = [tuple(launch[3]) for launch in launches["launches"]]
    assert grids == [(5,), (3,), (10,)]
    vector_add(*tensors(0x7F0000000000), BLOCK=512)
    assert launches["full"] == 3 and tuple(launches["launches"][-1][3]) == (10,)


def test_what_a_warm_call_cannot_check_goes_the_full_way_and_raises_there(launches):
    vector_add = fresh_vector_add()
    vector_add(*tensors(0x7F0000000000))
    x, y, _ = tensors(0x7F0000000000)
    with pytest.raises(ValueError, match="'out' must start on a 16-byte boundary"):
        vector_add(x, y, DeviceTensor(0x7F0000300004))
    with pytest.raises(ValueError, match="parameters 'x' and 'out' are the same array"):
        vector_add(x, y, x)
    with pytest.raises(ValueError, match="'y' and 'out' overlap in memory"):
        vector_add(x, y, DeviceTensor(0x7F0000100000 + 4096))
    with pytest.raises(TypeError, match="expects a tensor of f32, got a device array of <f2"):
        vector_add(x, y, DeviceTensor(0x7F0000300000, typestr="<f2"))
    assert launches["full"] == 5 and len(launches["launches"]) == 1


def test_keywords_and_host_arrays_are_never_warm(launches):
    vector_add = fresh_vector_add()
    x, y, out = tensors(0x7F0000000000)
    vector_add(x, y, out=out)
    vector_add(x, y, out=out)
    assert launches["full"] == 2


def test_value_facts_must_still_be_on_record(launches, monkeypatch):
    """A call that states value facts is warm only while each fact is on record for
    its tensor (the record is dropped when a kernel writes the tensor)."""
    vector_add = fresh_vector_add()
    recorded = {"yes": True}
    kernel_module = importlib.import_module("tilelang.kernel")
    monkeypatch.setattr(kernel_module, "check_values", lambda facts, values: None)
    monkeypatch.setattr(value_facts, "recorded_within", lambda array, fact: recorded["yes"])
    x, y, out = tensors(0x7F0000000000)
    vector_add(x, y, out, assume={"x": "finite"})
    vector_add(x, y, out, assume={"x": "finite"})
    assert launches["full"] == 1
    recorded["yes"] = False
    vector_add(x, y, out, assume={"x": "finite"})
    assert launches["full"] == 2


def test_a_packed_buffer_keys_by_its_dtype(launches, monkeypatch):
    """tilelang's DeviceBuffer: a u4 buffer and a u8 one of the same bytes are
    different calls."""
    monkeypatch.setattr(gpu.DeviceBuffer, "__del__", lambda self: None)  # nothing allocated

    @tl.kernel
    def widen(w: tl.Tensor["T", "N"], y: tl.Tensor[tl.i32, "N"], T: tl.constexpr = tl.u4):
        b = tl.blocks(tl.cdiv(N, 64))
        tl.store(y, [b * 64], tl.load(w, [b * 64], [64]).to(tl.i32))

    def buffer(dtype, n, pointer):
        made = gpu.DeviceBuffer.__new__(gpu.DeviceBuffer)
        made.nbytes, made.shape, made.pointer = n * dtype.bits // 8, (n,), pointer
        made.host_dtype, made.dtype = dtypes.u8.storage, (dtype if dtype.bits < 8 else None)
        return made

    y = DeviceTensor(0x7F0000100000, (256,), "<i4")
    widen(buffer(tl.u4, 256, 0x7F0000000000), y)
    widen(buffer(tl.u4, 256, 0x7F0000000000), y)
    assert launches["full"] == 1
    with pytest.raises(TypeError, match="expects a tensor of u4"):
        widen(buffer(tl.u8, 128, 0x7F0000000000), y)
    assert launches["full"] == 2


@tl.kernel(warps=4)
def sums(
    a: tl.Tensor[tl.f32, "N"],
    b: tl.Tensor[tl.f32, "N"],
    c: tl.Tensor[tl.f32, "N"],
    d: tl.Tensor[tl.f32, "N"],
    e: tl.Tensor[tl.f32, "N"],
    x: tl.Tensor[tl.f32, "N"],
    y: tl.Tensor[tl.f32, "N"],
):
    i = tl.blocks(tl.cdiv(N, 1024)) * 1024
    ab = tl.load(a, [i], [1024]) + tl.load(b, [i], [1024])
    tl.store(x, [i], ab + tl.load(c, [i], [1024]))
    tl.store(y, [i], tl.load(d, [i], [1024]) + tl.load(e, [i], [1024]))


def test_with_many_tensors_a_read_only_tensor_in_several_slots_stays_warm(launches):
    """Seven tensors, two written (11 pairs: the sweep first). One tensor read in two
    slots is no overlap and the call stays warm; a written one over a read one goes the
    full way and raises there."""
    fresh = tl.kernel(sums.fn, warps=4)
    fresh(*[DeviceTensor(0x7F0000000000 + i * 0x100000) for i in range(7)])
    shared = DeviceTensor(0x7F0010000000)
    rest = [DeviceTensor(0x7F0010100000 + i * 0x100000) for i in range(5)]
    fresh(shared, shared, *rest)
    assert launches["full"] == 1
    assert launches["launches"][-1][1]["a"] == launches["launches"][-1][1]["b"]
    over = DeviceTensor(0x7F0010100000 + 4 * 0x100000 + 64)  # y over x's memory
    with pytest.raises(ValueError, match="overlap"):
        fresh(shared, *rest, over)  # a, b..e, x = rest[4], y 64 bytes into x
    assert launches["full"] == 2


@given(
    st.lists(
        st.tuples(st.integers(0, 64), st.integers(0, 12)).map(lambda e: (16 * e[0], e[1] * 8)),
        max_size=12,
    )
)
def test_the_overlap_sweep_misses_no_pair_and_flags_only_touching_ones(extents):
    """The sweep a warm call with many tensors makes before checking pairs one by one:
    when any two ranges overlap or start together it says so, and when it says so some
    two do (an empty range counting as one byte)."""
    touching = any(
        a[0] == b[0] or ranges_overlap(*a, *b)
        for i, a in enumerate(extents)
        for b in extents[i + 1 :]
    )
    widened = [(start, max(nbytes, 1)) for start, nbytes in extents]
    touching_widened = any(
        ranges_overlap(*a, *b) for i, a in enumerate(widened) for b in widened[i + 1 :]
    )
    found = warm_calls._some_overlap(extents)
    assert found == touching_widened
    assert found or not touching


def test_a_full_memo_drops_only_its_oldest_key(launches, monkeypatch):
    monkeypatch.setattr(warm_calls, "MAX_WARM_CALLS", 3)
    vector_add = fresh_vector_add()
    for n in (1000, 2000, 3000, 4000):  # the fourth key drops the first
        vector_add(*tensors(0x7F0000000000, (n,)))
    assert launches["full"] == 4
    for n in (2000, 3000, 4000):
        vector_add(*tensors(0x7F0000000000, (n,)))
    assert launches["full"] == 4
    vector_add(*tensors(0x7F0000000000, (1000,)))
    assert launches["full"] == 5


def test_scalars_key_by_type_and_bits(launches):
    """A warm call launches the scalars its key recorded: -0.0 must not find 0.0's call,
    nor 2.0 the call of 2; a NaN finds its own."""

    @tl.kernel(warps=4)
    def scaled(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, "N"], alpha: tl.f32):
        b = tl.blocks(tl.cdiv(N, 1024))
        tl.store(out, [b * 1024], tl.load(x, [b * 1024], [1024]) * alpha)

    x, _, out = tensors(0x7F0000000000)
    for alpha in (0.0, -0.0, 2, 2.0, float("nan"), float("nan")):
        scaled(x, out, alpha)
    assert launches["full"] == 5  # the second NaN was warm
    alphas = [launch[2]["alpha"] for launch in launches["launches"]]
    assert [math.copysign(1, a) for a in alphas[:2]] == [1, -1]
