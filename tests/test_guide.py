"""docs/guide.md is true: its Python blocks run, in order, in one namespace, and assert
what the text around them claims; its `tilelang` commands run and succeed.

A block fenced as ```` ```python ```` runs on the CPU (numpy arrays: the LLVM backend or
the interpreter; GPU builds compile through NVRTC, which needs no GPU). A block fenced
as ```` ```python no-run ```` needs a GPU; it must say so in its first line, and it is
compiled (its syntax checked) but not run. Each block is compiled with the guide as its
file name and its lines at their places in the guide, so a failure (and a kernel's
source-located error) points at the guide's own line.
"""

from __future__ import annotations

import linecache
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tilelang import cli

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
FENCE = re.compile(r"^```(\w*)(?:[ \t]+(\S.*))?$")


@dataclass(frozen=True)
class Block:
    language: str
    options: str
    first_line: int  # 1-based line of the block's first code line in the guide
    lines: tuple[str, ...]

    @property
    def code(self) -> str:
        return "".join(self.lines)

    def padded(self, total: int) -> str:
        """The code at its lines of the guide, every other line blank."""
        text = [""] * total
        for i, line in enumerate(self.lines):
            text[self.first_line - 1 + i] = line.rstrip("\n")
        return "\n".join(text) + "\n"


def read_blocks(text: str) -> list[Block]:
    """Every fenced block of the guide, with its language and the text after it."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.rstrip("\n")
        if current is None:
            match = FENCE.match(stripped)
            if match:
                current, start = (match[1], (match[2] or "").strip(), []), number + 1
        elif stripped == "```":
            language, options, lines = current
            blocks.append(Block(language, options, start, tuple(lines)))
            current = None
        else:
            current[2].append(line)
    assert current is None, f"docs/guide.md: the block opened at line {start - 1} is not closed"
    return blocks


TEXT = GUIDE.read_text()
LINE_COUNT = len(TEXT.splitlines())
BLOCKS = read_blocks(TEXT)
PYTHON = [b for b in BLOCKS if b.language == "python"]


def test_the_guide_has_its_sections_and_the_two_placeholders():
    headings = re.findall(r"^## (.+)$", TEXT, flags=re.MULTILINE)
    for wanted in (
        "Writing a kernel",
        "Data types and packing",
        "Layouts and pictures",
        "Running on the CPU and the GPU",
        "Arguments, DLPack and outputs",
        "Debugging",
        "Quantized weights: `tilelang.quant`",
        "Ready kernels: `tilelang.kernels`",
        "The autotuner",
        "Using tilelang from PyTorch",
        "Ahead-of-time compilation",
    ):
        assert wanted in headings, f"docs/guide.md has no section '## {wanted}'"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as '-'."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def test_every_link_inside_the_guide_reaches_a_heading():
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", TEXT, flags=re.MULTILINE)}
    links = re.findall(r"\]\(#([^)]+)\)", TEXT)
    assert links, "the guide's contents link its sections"
    missing = sorted(set(links) - anchors)
    assert not missing, f"docs/guide.md links to no heading: {missing}"


def test_every_file_the_guide_links_exists():
    for target in re.findall(r"\]\(([^)#:]+)\)", TEXT):
        assert (GUIDE.parent / target).exists(), f"docs/guide.md links to {target}, not a file"


def test_every_python_block_runs_or_says_why_it_cannot():
    assert len(PYTHON) >= 20
    for block in PYTHON:
        assert block.options in ("", "no-run"), (
            f"docs/guide.md:{block.first_line}: unknown block option {block.options!r}"
        )
        if block.options == "no-run":
            assert "GPU" in block.lines[0], (
                f"docs/guide.md:{block.first_line}: a no-run block must say in its first line "
                "that it needs a GPU"
            )
        compile(block.padded(LINE_COUNT), str(GUIDE), "exec")  # at least, it is Python


@pytest.fixture
def clean_environment(tmp_path, monkeypatch):
    """A cache of its own (the guide's claims about evaluated configs and cache entries
    must not depend on what ran before) and no user switches."""
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("TILELANG_AUTOTUNE", "TILELANG_DUMP_IR"):
        # Set, then deleted: the teardown restores what was there even if a block that
        # sets one of them fails before it deletes it again.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_python_blocks_run_in_order_and_their_asserts_hold(clean_environment):
    runnable = [b for b in PYTHON if b.options == ""]
    # inspect (and so @tl.kernel) reads a function's source through linecache: the
    # guide's lines as Python, each block at its place.
    lines = [""] * LINE_COUNT
    for block in runnable:
        for i, line in enumerate(block.lines):
            lines[block.first_line - 1 + i] = line.rstrip("\n")
    source = [line + "\n" for line in lines]
    saved = linecache.cache.get(str(GUIDE))
    linecache.cache[str(GUIDE)] = (len(TEXT), None, source, str(GUIDE))
    namespace: dict = {"__name__": "guide"}
    try:
        for block in runnable:
            code = compile(block.padded(LINE_COUNT), str(GUIDE), "exec")
            exec(code, namespace)
    finally:
        if saved is None:
            linecache.cache.pop(str(GUIDE), None)
        else:
            linecache.cache[str(GUIDE)] = saved


def commands() -> list[list[str]]:
    """The `tilelang ...` lines of the guide's bash blocks, as argument lists."""
    found = []
    for block in BLOCKS:
        if block.language != "bash":
            continue
        for line in block.lines:
            command = line.split("#", 1)[0].strip()
            if command.startswith("tilelang "):
                found.append(shlex.split(command)[1:])
    return found


def test_the_guide_shows_the_commands():
    subcommands = {c[0] for c in commands()}
    assert {"dtypes", "layout", "inspect", "cache"} <= subcommands


@pytest.mark.parametrize("argv", commands(), ids=" ".join)
def test_every_tilelang_command_of_the_guide_succeeds(argv, clean_environment, capsys):
    # The guide's paths are relative to the repository root; pictures land in tmp_path.
    os.symlink(ROOT / "examples", clean_environment / "examples")
    assert cli.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.strip()
    if "--out" in argv:
        picture = clean_environment / argv[argv.index("--out") + 1]
        assert "<svg" in picture.read_text()
