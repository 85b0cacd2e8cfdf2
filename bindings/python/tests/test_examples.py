"""README's Python examples are files (examples/python/), and they run as
README shows them: `python examples/python/X.py THIS OTHER OTHER`, three
members on free loopback ports. With --seconds each becomes available,
leaves and exits 0, and together they own both shards; without it, Ctrl-C
makes each leave. (minishard-ffi/tests/readme.rs checks that README shows
the files as they are.)"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import free_addresses

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
# Each example README runs: `python examples/python/NAME.py ADDRESS...`.
SHOWN = sorted(set(re.findall(r"^python (examples/python/\w+\.py) 127\.0\.0\.1:", README, re.M)))


def test_readme_runs_every_python_example_it_shows() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples/python").glob("*.py"))
    assert files and SHOWN == files, f"README runs {SHOWN}, examples/python/ has {files}"


def start_three(script: str, *options: str) -> List[subprocess.Popen[str]]:
    """Three members, each with its own address first, as README shows."""
    addresses = free_addresses(3)
    members = []
    for i in range(3):
        mine = [addresses[i]] + [a for j, a in enumerate(addresses) if j != i]
        members.append(
            subprocess.Popen(
                [sys.executable, script, *options, *mine],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return members


def finish(members: List[subprocess.Popen[str]], read: Optional[List[str]] = None) -> List[str]:
    """Each member's whole output (`read`: what was read of it already),
    once it has exited 0 after being available and leaving."""
    outputs = []
    for i, member in enumerate(members):
        rest, _ = member.communicate(timeout=60)
        out = (read[i] if read else "") + rest
        assert member.returncode == 0, f"member {i} exited with {member.returncode}:\n{out}"
        assert re.search(r"^shard 0 lives on 127\.0\.0\.1:\d+$", out, re.M), f"member {i} never was available:\n{out}"
        assert out.rstrip().endswith("left"), f"member {i} did not leave:\n{out}"
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("script", SHOWN)
def test_three_members_for_a_while(script: str) -> None:
    outputs = finish(start_three(script, "--seconds", "2"))
    owned = {int(s) for out in outputs for s in re.findall(r"^owning shard (\d+) ", out, re.M)}
    assert owned == {0, 1}, f"shards owned: {owned}\n" + "\n".join(outputs)
    gave_up = sum(len(re.findall(r"gave it up to no one \(left\)$", out, re.M)) for out in outputs)
    assert gave_up == 2, "each owner gives its shard up as it leaves:\n" + "\n".join(outputs)


@pytest.mark.parametrize("script", SHOWN)
def test_ctrl_c_leaves(script: str) -> None:
    members = start_three(script)
    seen: List[str] = ["", "", ""]
    deadline = time.monotonic() + 60
    # Read each member's lines until it is available, then interrupt it.
    for i, member in enumerate(members):
        assert member.stdout is not None
        while "shard 0 lives on" not in seen[i] and time.monotonic() < deadline:
            line = member.stdout.readline()
            if not line:
                break
            seen[i] += line
    for member in members:
        member.send_signal(signal.SIGINT)
    finish(members, read=seen)
