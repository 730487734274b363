"""The build log (`tilelang.runtime.build_log`): a build that runs the compiler says so
on the ``tilelang`` logger at INFO (what, for which target, how long), a build read
from the disk cache only at DEBUG, and ``TILELANG_LOG=1`` prints the INFO lines to
stderr."""

import logging

import numpy as np
import pytest

import tilelang as tl
from tilelang.runtime import build_log


@tl.kernel(warps=1)
def logged_double(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], BLOCK: tl.constexpr = 32):
    b = tl.blocks(tl.cdiv(N, BLOCK))
    tl.store(y, [b * BLOCK], tl.load(x, [b * BLOCK], [BLOCK]) * 2.0)


def built_lines(records) -> list[str]:
    return [r.getMessage() for r in records if r.name == "tilelang" and r.levelno == logging.INFO]


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))


@pytest.mark.usefixtures("fresh_cache")
def test_a_gpu_build_logs_once_and_a_cache_hit_only_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="tilelang")
    tl.kernel(warps=1)(logged_double.fn).compile(target="sm_80", BLOCK=64)
    lines = built_lines(caplog.records)
    assert len(lines) == 1, lines
    assert lines[0].startswith("built logged_double(BLOCK=64) for sm_80 in "), lines
    assert lines[0].endswith(" s (passes, lowering, NVRTC)")
    caplog.clear()
    fresh = tl.kernel(warps=1)(logged_double.fn)  # a new kernel object: the disk cache hits
    fresh.compile(target="sm_80", BLOCK=64)
    assert built_lines(caplog.records) == []
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("from the disk cache" in line and "sm_80" in line for line in debug), debug


@pytest.mark.usefixtures("fresh_cache")
def test_a_cpu_build_logs_one_line_with_its_lowering_and_llvm_times_added(caplog):
    """A CPU build lowers when compiled and makes machine code at its first launch: one
    INFO line then, naming the build's constexprs (two specializations, two lines)."""
    caplog.set_level(logging.INFO, logger="tilelang")
    x = np.arange(40, dtype=np.float32)
    fresh = tl.kernel(warps=1)(logged_double.fn)
    for block in (16, 32):
        np.testing.assert_array_equal(fresh(x, np.empty_like(x), BLOCK=block), 2 * x)
    lines = built_lines(caplog.records)
    assert [line.split(" in ")[0] for line in lines] == [
        "built logged_double(BLOCK=16) for cpu",
        "built logged_double(BLOCK=32) for cpu",
    ], lines
    assert all(line.endswith(" s (passes, lowering, LLVM)") for line in lines), lines


def test_tilelang_log_debug_shows_the_cache_hits_too(monkeypatch):
    monkeypatch.setattr(build_log.LOGGER, "handlers", [])
    monkeypatch.setattr(build_log.LOGGER, "level", logging.NOTSET)
    assert build_log.configure({"TILELANG_LOG": "debug"}) is not None
    assert build_log.LOGGER.getEffectiveLevel() == logging.DEBUG


def test_tilelang_log_prints_to_stderr_once_however_often_configured(monkeypatch):
    monkeypatch.setattr(build_log.LOGGER, "handlers", [])
    monkeypatch.setattr(build_log.LOGGER, "level", logging.NOTSET)
    assert build_log.configure({"TILELANG_LOG": "0"}) is None
    assert build_log.describe("k", (("A", 1), ("B", "u4"))) == "k(A=1, B=u4)"
    assert build_log.describe("k", ()) == "k"
    assert build_log.describe("k", tuple((f"N{i}", i) for i in range(99))).endswith(", ...)")
    assert build_log.configure({}) is None
    handler = build_log.configure({"TILELANG_LOG": "1"})
    assert handler is not None and build_log.LOGGER.handlers == [handler]
    assert build_log.configure({"TILELANG_LOG": "1"}) is handler
    assert build_log.LOGGER.handlers == [handler]
    assert build_log.LOGGER.getEffectiveLevel() == logging.INFO
    record = logging.LogRecord("tilelang", logging.INFO, "", 0, "built k for cpu", (), None)
    assert handler.format(record) == "tilelang: built k for cpu"
