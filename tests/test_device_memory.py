"""`tilelang.DeviceBuffer`'s memory (`tilelang.runtime.device_memory`): freed buffers are
reused without driver calls, and never while work may still use them.

The driver is a stub over no memory that logs every call; the test logs when a buffer
is made and dropped beside it. The law, checked on the log by `check_log` (written from
the rule, not from the cache): a pointer is handed out again, or given back to the
driver, only after a `cuCtxSynchronize` that came after the buffer holding it was
dropped (until then, a kernel on any stream, or another library handed the buffer, may
still read it: what `cuMemFree`, which waits for the device, made sure of before)."""

import gc
import random

import numpy as np
import pytest

from tilelang.runtime import device_memory, gpu

OUT_OF_MEMORY = 2


class Driver:
    """The driver calls `DeviceBuffer` makes; `log` is shared with the test."""

    class CUresult:
        CUDA_SUCCESS = 0
        CUDA_ERROR_OUT_OF_MEMORY = OUT_OF_MEMORY

    def __init__(self, capacity: int | None = None) -> None:
        self.log: list[tuple] = []
        self.live: dict[int, int] = {}  # pointer -> bytes, allocated from the driver
        self.capacity = capacity
        self.next = 0x7F0000000000
        self.during: dict[str, object] = {}  # driver call -> what it runs first

    def _hook(self, name: str) -> None:
        hook = self.during.pop(name, None)
        if hook is not None:
            hook()

    def cuMemAlloc(self, nbytes):
        self._hook("cuMemAlloc")
        if self.capacity is not None and sum(self.live.values()) + nbytes > self.capacity:
            self.log.append(("refused", nbytes))
            return OUT_OF_MEMORY, 0
        pointer, self.next = self.next, self.next + (1 << 20)
        self.live[pointer] = nbytes
        self.log.append(("cuMemAlloc", pointer))
        return 0, pointer

    def cuMemFree(self, pointer):
        del self.live[pointer]
        self.log.append(("cuMemFree", pointer))
        return (0,)

    def cuCtxSynchronize(self):
        self.log.append(("cuCtxSynchronize",))
        self._hook("cuCtxSynchronize")  # after it began: what it runs is not settled
        return (0,)

    def cuMemcpyHtoD(self, pointer, source, nbytes):
        return (0,)

    def calls(self, name: str) -> int:
        return sum(1 for entry in self.log if entry[0] == name)


@pytest.fixture
def driver(monkeypatch):
    fake = Driver()
    monkeypatch.setattr(gpu, "driver", lambda: fake)
    monkeypatch.setattr(gpu, "_context", lambda: None)
    yield fake
    gc.collect()


def make(driver: Driver, shape, dtype=np.float16) -> gpu.DeviceBuffer:
    buffer = gpu.DeviceBuffer.empty(shape, dtype)
    driver.log.append(("made", buffer.pointer))
    return buffer


def drop(driver: Driver, buffers: list, index: int = 0) -> None:
    pointer = buffers[index].pointer
    del buffers[index]  # the last reference: freed now
    driver.log.append(("dropped", pointer))


def check_log(log: list[tuple]) -> None:
    """The law of the module docstring, over the log."""
    state: dict[int, str] = {}  # pointer -> "fresh", "used", "dropped", "settled"
    for entry in log:
        kind = entry[0]
        if kind == "cuMemAlloc":
            state[entry[1]] = "fresh"
        elif kind == "cuCtxSynchronize":
            state = {p: "settled" if s == "dropped" else s for p, s in state.items()}
        elif kind == "made":
            assert state.get(entry[1]) in ("fresh", "settled"), f"{entry[1]:#x} reused unsettled"
            state[entry[1]] = "used"
        elif kind == "dropped":
            assert state[entry[1]] == "used"
            state[entry[1]] = "dropped"
        elif kind == "cuMemFree":
            assert state.get(entry[1]) == "settled", f"{entry[1]:#x} freed unsettled"
            del state[entry[1]]


def test_a_call_after_call_makes_no_driver_call_but_a_periodic_synchronization(driver):
    """A decode loop: each step makes an output and a scratch buffer, and drops the last
    step's. Before, each buffer was a cuMemAlloc and a cuMemFree (which waits for the
    device): 2000 of each."""
    steps, held = 1000, []
    for _ in range(steps):
        held += [make(driver, (8, 4096)), make(driver, (8, 32, 16, 130), np.float32)]
        while len(held) > 2:
            drop(driver, held)
    check_log(driver.log)
    assert driver.calls("cuMemFree") == 0
    assert driver.calls("cuMemAlloc") <= 2 * device_memory.SYNC_AFTER + 4
    assert driver.calls("cuCtxSynchronize") <= 2 * steps // device_memory.SYNC_AFTER + 1


def test_buffers_of_many_sizes_dropped_in_any_order_obey_the_law(driver, monkeypatch):
    monkeypatch.setattr(device_memory, "SYNC_AFTER", 8)
    monkeypatch.setattr(device_memory, "CACHED_BYTES", 4096)  # trimming happens too
    rng, held = random.Random(0), []
    for _ in range(3000):
        if held and rng.random() < 0.5:
            drop(driver, held, rng.randrange(len(held)))
        else:
            held.append(make(driver, (rng.choice([1, 2, 3, 64, 500]),)))
    check_log(driver.log)
    assert driver.calls("cuMemFree") > 0  # the cache was trimmed past its size


def test_frees_during_an_allocation_or_a_synchronization_wait_for_the_next_one(driver):
    """A finalizer may run inside an allocation (the cache's lock held) or while it
    synchronizes: such a free neither deadlocks nor counts as settled by a
    synchronization that began before it."""
    held = [make(driver, (4,)) for _ in range(device_memory.SYNC_AFTER + 2)]
    while len(held) > 2:
        drop(driver, held)
    driver.during["cuCtxSynchronize"] = lambda: drop(driver, held)
    driver.during["cuMemAlloc"] = lambda: drop(driver, held)
    held.append(make(driver, (4,)))  # settles the dropped ones; one more dropped inside
    held.append(make(driver, (5,)))  # a new size: the driver's, and one more dropped
    assert driver.calls("cuCtxSynchronize") == 1
    for _ in range(device_memory.SYNC_AFTER + 2):
        held.append(make(driver, (4,)))
    check_log(driver.log)


def test_an_allocation_the_driver_refuses_returns_what_is_cached_and_tries_again(
    driver, monkeypatch
):
    monkeypatch.setattr(driver, "capacity", 8 * 1024)
    held = [make(driver, (1024,)) for _ in range(4)]  # 2 KiB each: all of it
    while held:
        drop(driver, held)
    big = make(driver, (2048,))  # 4 KiB: only once the dropped ones are returned
    assert driver.calls("refused") == 1 and big.pointer in driver.live
    check_log(driver.log)


def test_release_cached_returns_every_dropped_buffer(driver):
    held = [make(driver, (n,)) for n in (1, 2, 3, 3)]
    kept = make(driver, (7,))
    while held:
        drop(driver, held)
    memory = device_memory.of(driver, gpu.check)
    assert memory.cached_bytes == 2 * (1 + 2 + 3 + 3)
    gpu.DeviceBuffer.release_cached()
    assert set(driver.live) == {kept.pointer} and memory.cached_bytes == 0
    check_log(driver.log)


def test_each_driver_has_its_own_memory(driver, monkeypatch):
    """A stub driver's pointers are not handed out under another (tests put stubs in the
    driver's place, one after the other)."""
    held = [make(driver, (4,)) for _ in range(device_memory.SYNC_AFTER + 1)]
    while held:
        drop(driver, held)
    other = Driver()
    monkeypatch.setattr(gpu, "driver", lambda: other)
    buffers = [make(other, (4,)) for _ in range(device_memory.SYNC_AFTER + 1)]
    assert all(b.pointer in other.live for b in buffers)
    check_log(other.log)
