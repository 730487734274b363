"""The C an ahead-of-time build writes (GPU launcher, CPU library source, bundle) compiles
without a warning under the strictest usual flags, as C11 and as C++: a project that
builds with -Wall -Wextra -Werror, or compiles every file as C++, takes it as it is."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_aot import KERNELS

from tilelang.cli import main


def compiler(variable: str, name: str) -> str:
    found = shutil.which(os.environ.get(variable) or name)
    assert found is not None, f"no {name} on PATH: a CI machine without one is broken"
    return found


@pytest.fixture(scope="module")
def axpy_builds(tmp_path_factory) -> Path:
    """axpy (a scalar parameter no launch check reads) for sm_80 and the CPU, twice,
    behind a bundle."""
    out = tmp_path_factory.mktemp("strict")
    source = out / "aot_kernels.py"
    source.write_text(KERNELS)
    spec = f"{source}:axpy"
    args = ["compile", spec, spec, "--name", "axpy_any", "--name", "axpy_128"]
    args += ["--assume", "none", "--assume", "N=128", "--bundle", "axpy_pick"]
    assert main([*args, "--arch", "sm_80", "--arch", "cpu", "-o", str(out)]) == 0
    return out


FILES = ["axpy_any.c", "axpy_any_cpu.c", "axpy_128.c", "axpy_pick.c"]
LANGUAGES = {
    "c11": ("CC", "cc", ["-std=c11"]),
    "c++": ("CXX", "c++", ["-x", "c++", "-std=c++17"]),
}


@pytest.mark.parametrize("language", list(LANGUAGES))
@pytest.mark.parametrize("name", FILES)
def test_the_generated_c_compiles_with_every_warning_an_error(axpy_builds, name, language):
    variable, default, flags = LANGUAGES[language]
    command = [compiler(variable, default), *flags, "-Wall", "-Wextra", "-Werror", "-O2"]
    command += ["-I", str(axpy_builds), "-c", "-o", os.devnull, str(axpy_builds / name)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stderr}"
