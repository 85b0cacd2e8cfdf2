"""`import minishard` loads only what every program needs: asyncio, inspect
and logging are imported when first used (README gives the import time;
timings are measured, not asserted)."""

from __future__ import annotations

import subprocess
import sys


def test_import_minishard_imports_neither_asyncio_nor_logging_nor_inspect():
    probe = (
        "import sys; before = set(sys.modules); import minishard; "
        "print(sorted(m for m in ('asyncio', 'logging', 'inspect', 'concurrent.futures') "
        "if m in sys.modules and m not in before))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"import minishard also imported {loaded}"
