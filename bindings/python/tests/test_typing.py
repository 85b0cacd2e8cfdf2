"""The package's annotations as a user's type checker sees them: `mypy
--strict` accepts a correct program and rejects misspelt health names and
dispatch modes (they are `Literal` types, not plain `str`)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def mypy(path: pathlib.Path) -> subprocess.CompletedProcess:
    # Run from a folder without the package's sources: mypy checks the
    # installed package, as it would in a user's project.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir=/dev/null", "--no-color-output", str(path)],
        cwd=HERE,
        capture_output=True,
        text=True,
    )


def test_mypy_strict_accepts_a_correct_program():
    checked = mypy(HERE / "typing_example.py")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mypy_strict_rejects_misspelt_healths_and_dispatch_modes():
    path = HERE / "typing_rejected.py"
    marked = {
        number
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.rstrip().endswith("# rejected")
    }
    assert len(marked) == 6
    checked = mypy(path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    reported = {
        int(m.group(1))
        for m in re.finditer(rf"^{re.escape(path.name)}:(\d+): error:", checked.stdout, re.M)
    }
    assert reported == marked, checked.stdout
