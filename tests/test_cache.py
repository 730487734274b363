"""The disk cache: keys, hits and misses, damaged entries, concurrent writers, the CLI."""

import subprocess
import sys
import textwrap

import pytest

from tilelang.cli import main
from tilelang.runtime.cache import ENTRY, DiskCache, cache_key


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    return DiskCache()


def test_keys_depend_on_every_part_and_on_the_order():
    key = cache_key("kernel text", "sm_90", "nvrtc 13.5")
    assert key == cache_key("kernel text", "sm_90", "nvrtc 13.5")
    assert key != cache_key("kernel text", "sm_80", "nvrtc 13.5")
    assert key != cache_key("kernel text", "sm_90", "nvrtc 13.6")
    assert cache_key("ab", "c") != cache_key("a", "bc")  # parts are length-prefixed


def test_miss_then_hit(cache):
    key = cache_key("k")
    assert cache.get(key) is None
    cache.put(key, {"cubin": b"\x00\x01binary", "ptx": b".version 8.0"})
    assert cache.get(key) == {"cubin": b"\x00\x01binary", "ptx": b".version 8.0"}
    assert [e.key for e in cache.entries()] == [key]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_entry_reads_as_missing_and_is_removed(cache, damage):
    key = cache_key("k")
    cache.put(key, {"cubin": b"x" * 100})
    path = cache.root / key[:2] / key / ENTRY
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-10])
    elif damage == "flip":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        path.write_bytes(b"not a cache entry")
    assert cache.get(key) is None
    assert not path.exists()
    cache.put(key, {"cubin": b"rebuilt"})
    assert cache.get(key) == {"cubin": b"rebuilt"}


def test_two_processes_writing_the_same_entry_both_succeed(cache):
    script = textwrap.dedent(
        """
        import sys
        from tilelang.runtime.cache import DiskCache, cache_key
        cache = DiskCache(sys.argv[1])
        key = cache_key("shared kernel")
        for i in range(200):
            cache.put(key, {"cubin": b"same bytes" * 1000})
            assert cache.get(key) == {"cubin": b"same bytes" * 1000}, i
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(cache.root)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert cache.get(cache_key("shared kernel")) == {"cubin": b"same bytes" * 1000}


def test_cli_lists_and_clears(cache, capsys):
    cache.put(cache_key("a"), {"ptx": b"1"})
    cache.put(cache_key("b"), {"ptx": b"22"})
    assert main(["cache", "ls"]) == 0
    assert "2 entries" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert cache.entries() == []
