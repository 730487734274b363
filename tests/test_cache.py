"""The disk cache: keys, hits and misses, damaged entries, concurrent writers, the CLI;
an unwritable cache, unusable entries, file modes, and the memo files."""

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from conftest import load_example, unstageable_gather

import tilelang as tl
from tilelang.cli import main
from tilelang.runtime import cache as cache_module
from tilelang.runtime import nvrtc
from tilelang.runtime.cache import ENTRY, CacheWarning, DiskCache, cache_key


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


def test_cli_names_the_kernel_and_target_of_each_build(cache, capsys):
    kernel = tl.kernel(load_example("softmax").softmax.fn)  # nothing shared in memory
    kernel.compile(target="sm_80")
    _ = kernel.compile().cpu  # a CPU build's entry is written with its machine code
    cache.put(cache_key("no meta"), {"ptx": b"1"})
    assert main(["cache", "ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.endswith("(softmax for sm_80)") for line in lines) == 1, lines
    assert sum(line.endswith("(softmax for cpu)") for line in lines) == 1, lines
    assert sum(line.endswith("  ptx") for line in lines) == 1, lines


# --------------------------------------------------------------------------- failures


def _writable(folder: Path) -> bool:
    """Whether this process can create a file in `folder` (root ignores chmod)."""
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


def _unwritable_root(tmp_path: Path, kind: str) -> Path:
    """A cache root that cannot be written, of the given kind. A read-only directory
    does not stop root, so as root that case uses a path under a regular file."""
    if kind == "read-only directory":
        root = tmp_path / "read-only"
        root.mkdir()
        root.chmod(0o555)
        if not _writable(root):
            return root
        kind = "under a file"
    if kind == "under a file":
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"not a directory")
        return blocker / "cache"
    return Path("/dev/null") / "tilelang-cache"


def _tiny_kernel():
    """A fresh kernel object (no in-memory cache) that compiles quickly."""
    return tl.kernel(load_example("vector_add").vector_add.fn)


@pytest.mark.parametrize("kind", ["read-only directory", "under a file", "/dev/null"])
def test_an_unwritable_cache_compiles_without_caching_and_warns_once(tmp_path, monkeypatch, kind):
    root = _unwritable_root(tmp_path, kind)
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(root))
    monkeypatch.setattr(cache_module, "_WARNED_ROOTS", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = _tiny_kernel().compile(target="sm_80")
        second = _tiny_kernel().compile(target="sm_80")  # a second miss, same process
    assert first.cubin[:4] == b"\x7fELF" and not first.cuda.cached and not second.cuda.cached
    messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(messages) == 1, messages
    assert str(root) in messages[0] and "TILELANG_CACHE_DIR" in messages[0]


def test_a_full_disk_is_an_unwritable_cache(cache, monkeypatch):
    def disk_full(folder, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_WARNED_ROOTS", set())
    monkeypatch.setattr(cache_module, "_write_new", disk_full)
    with pytest.warns(CacheWarning, match="No space left on device"):
        assert cache.put(cache_key("k"), {"ptx": b"1"}) is False
    assert cache.get(cache_key("k")) is None


def test_an_entry_that_is_a_directory_is_discarded_and_rebuilt(cache):
    key = cache_key("k")
    entry = cache.root / key[:2] / key / ENTRY
    entry.mkdir(parents=True)
    (entry / "junk").write_bytes(b"x")
    assert cache.get(key) is None
    assert not entry.exists()
    entry.mkdir(parents=True)  # put without a get before it repairs the entry too
    assert cache.put(key, {"ptx": b"rebuilt"})
    assert cache.get(key) == {"ptx": b"rebuilt"}


def test_a_file_where_the_shard_directory_belongs_is_replaced(cache):
    key = cache_key("k")
    cache.root.mkdir(exist_ok=True)
    (cache.root / key[:2]).write_bytes(b"garbage")
    assert cache.get(key) is None
    assert cache.put(key, {"ptx": b"1"}) and cache.get(key) == {"ptx": b"1"}


def _only_entry(cache: DiskCache) -> str:
    (entry,) = cache.entries()
    return entry.key


@pytest.mark.parametrize(
    "damage",
    ["meta is not json", "meta is not a dict", "other architecture", "a blob missing"],
)
def test_a_well_formed_entry_with_unusable_contents_is_rebuilt(cache, damage):
    built = _tiny_kernel().compile(target="sm_80")
    key = _only_entry(cache)
    blobs = cache.get(key)
    if damage == "meta is not json":
        blobs["meta"] = b"{not json"
    elif damage == "meta is not a dict":
        blobs["meta"] = b"[1, 2]"
    elif damage == "other architecture":
        blobs["meta"] = json.dumps({"arch": "sm_86", "symbol": "vector_add"}).encode()
    else:
        del blobs["cubin"]
    assert cache.put(key, blobs)  # a valid checksum around contents the build cannot use
    rebuilt = _tiny_kernel().compile(target="sm_80")
    assert not rebuilt.cuda.cached and rebuilt.cubin == built.cubin
    again = _tiny_kernel().compile(target="sm_80")  # the rebuild was stored, whole
    assert again.cuda.cached and again.cubin == built.cubin


def test_a_thread_ir_that_does_not_unpickle_is_lowered_again(cache):
    built = _tiny_kernel().compile(target="sm_80")
    key = _only_entry(cache)
    blobs = cache.get(key)
    blobs["thread"] = b"not a pickle"
    assert cache.put(key, blobs)
    hit = _tiny_kernel().compile(target="sm_80")
    assert hit.cuda.cached  # the thread IR is read on first use, not by compile
    assert hit.thread == built.thread  # lowered again, the same program
    assert cache.get(key) is None  # the entry was discarded...
    rebuilt = _tiny_kernel().compile(target="sm_80")
    assert not rebuilt.cuda.cached  # ...and is rebuilt by the next compile
    assert _tiny_kernel().compile(target="sm_80").thread == built.thread


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_entries_are_created_like_any_file_under_the_umask(cache, umask):
    previous = os.umask(umask)
    try:
        cache.put(cache_key("k"), {"ptx": b"1"})
    finally:
        os.umask(previous)
    path = cache.root / cache_key("k")[:2] / cache_key("k") / ENTRY
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o777 & ~umask


def _unreadable(path: Path, monkeypatch) -> None:
    """Makes reading `path` fail with EACCES: chmod, or (as root, where chmod does not
    stop reads) a stand-in for `Path.read_bytes` that refuses that one path."""
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return
    read_bytes = Path.read_bytes

    def refuse(self):
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)


def _damaged_cache(cache: DiskCache, monkeypatch) -> dict[str, str]:
    """One good entry and one of each kind of unreadable one; key prefix -> problem."""
    cache.put(cache_key("good"), {"ptx": b"1"})
    for name in ("garbage", "a directory", "incomplete", "permissions"):
        cache.put(cache_key(name), {"ptx": b"2"})
    folder = {n: cache.root / cache_key(n)[:2] / cache_key(n) for n in ("garbage", "a directory")}
    (folder["garbage"] / ENTRY).write_bytes(b"garbage")
    (folder["a directory"] / ENTRY).unlink()
    (folder["a directory"] / ENTRY).mkdir()
    incomplete = cache.root / cache_key("incomplete")[:2] / cache_key("incomplete")
    (incomplete / ENTRY).unlink()
    (incomplete / ".tmp-1-abc").write_bytes(b"half")
    permissions = cache.root / cache_key("permissions")[:2] / cache_key("permissions") / ENTRY
    _unreadable(permissions, monkeypatch)
    used = {
        cache_key(n)[:2] for n in ("good", "garbage", "a directory", "incomplete", "permissions")
    }
    shard = next(f"{i:02x}" for i in range(256) if f"{i:02x}" not in used)
    (cache.root / shard).write_bytes(b"a file where a shard directory belongs")
    return {
        cache_key("garbage")[:16]: "damaged",
        cache_key("a directory")[:16]: "is a directory",
        cache_key("incomplete")[:16]: "incomplete",
        cache_key("permissions")[:16]: "Permission denied",
        shard: "not a directory",
    }


def test_cli_lists_unreadable_entries_as_unreadable(cache, monkeypatch, capsys):
    problems = _damaged_cache(cache, monkeypatch)
    assert main(["cache", "ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    good = [line for line in lines if line.startswith(cache_key("good")[:16])]
    assert len(good) == 1 and "unreadable" not in good[0] and good[0].endswith("ptx")
    for prefix, problem in problems.items():
        (line,) = [line for line in lines if line.startswith(prefix)]
        assert "unreadable" in line and problem in line, line
    assert lines[-1].startswith(f"6 entries ({len(problems)} unreadable)")


def test_cli_clear_removes_unreadable_entries_too(cache, monkeypatch, capsys):
    _damaged_cache(cache, monkeypatch)
    (cache.root / "notes.txt").write_bytes(b"not the cache's: left alone")
    assert main(["cache", "clear"]) == 0
    assert "removed 6 entries" in capsys.readouterr().out
    assert sorted(p.name for p in cache.root.iterdir()) == ["notes.txt"]


def test_cli_clear_reports_what_it_could_not_remove(cache, monkeypatch, capsys):
    cache.put(cache_key("a"), {"ptx": b"1"})
    cache.put(cache_key("b"), {"ptx": b"2"})
    stuck = cache.root / cache_key("b")[:2] / cache_key("b")
    stuck.chmod(0o555)  # its entry.bin cannot be unlinked (except by root)
    if _writable(stuck):
        unlink = Path.unlink

        def refuse(self, missing_ok=False):
            if self.parent == stuck:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return unlink(self, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", refuse)
    try:
        assert main(["cache", "clear"]) == 1
    finally:
        stuck.chmod(0o755)
    out, err = capsys.readouterr()
    assert "removed 1 entries" in out
    assert f"could not remove {stuck / ENTRY}: Permission denied" in err
    assert [e.key for e in cache.entries()] == [cache_key("b")]


# --------------------------------------------------------------------------- memo files


def test_the_source_hash_is_memoized_by_file_stamps(cache):
    compute = cache_module.source_hash.__wrapped__  # without the per-process cache
    content = compute()
    assert compute() == content
    (memo_file,) = (cache.root / cache_module.MEMO).glob("source-*.json")
    memo = json.loads(memo_file.read_text())
    assert len(memo["files"]) > 10 and "runtime/cache.py" in memo["files"]
    # The memo is trusted while every stamp holds: a planted hash comes back...
    memo_file.write_text(json.dumps({**memo, "hash": "planted"}))
    assert compute() == "planted"
    # ...and a changed stamp (a file edited) makes it hash the sources again.
    memo["files"]["runtime/cache.py"][1] += 1
    memo_file.write_text(json.dumps({**memo, "hash": "planted"}))
    assert compute() == content


def test_the_nvrtc_version_is_memoized_until_the_library_changes(cache, tmp_path, monkeypatch):
    library = tmp_path / "libnvrtc.so.13"
    library.write_bytes(b"pretend library")
    asked = []

    def version():
        asked.append(1)
        return (13, len(asked))

    monkeypatch.setattr(nvrtc, "nvrtc_version", version)
    monkeypatch.setattr(nvrtc, "_library_path", lambda: str(library))
    assert nvrtc._identity(cache) == "nvrtc 13.1"
    assert nvrtc._identity(cache) == "nvrtc 13.1" and len(asked) == 1  # from the memo
    library.write_bytes(b"another pretend library")  # a new library at the same path
    assert nvrtc._identity(cache) == "nvrtc 13.2" and len(asked) == 2


def test_a_build_read_from_disk_warns_as_the_first_compile_did(cache):
    from tilelang.passes.software_pipeline import PipelineWarning

    with pytest.warns(PipelineWarning, match="the gather with 1") as first:
        unstageable_gather().compile(target="sm_90")
    with pytest.warns(PipelineWarning, match="the gather with 1") as again:
        build = unstageable_gather().compile(target="sm_90")
    assert build.cuda.cached
    said = [(str(w.message), w.filename, w.lineno) for w in first if "gather" in str(w.message)]
    assert said == [
        (str(w.message), w.filename, w.lineno) for w in again if "gather" in str(w.message)
    ]
