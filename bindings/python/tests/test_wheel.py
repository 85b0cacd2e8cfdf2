"""The wheels run-tests.sh built, as a packager or a user would check them:
the one users get is a manylinux2014 (glibc 2.17) abi3 wheel without the
testing hooks; the one these tests run was installed from its .whl file."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import zipfile
from importlib import metadata

import pytest

import minishard


@pytest.fixture(scope="module")
def release_wheel() -> pathlib.Path:
    path = os.environ.get("MINISHARD_RELEASE_WHEEL")
    if not path:
        pytest.skip("MINISHARD_RELEASE_WHEEL is not set: run bindings/python/run-tests.sh")
    return pathlib.Path(path)


def wheel_tags(text: str) -> set:
    return {line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")}


def test_the_release_wheel_is_manylinux2014_and_abi3(release_wheel):
    assert release_wheel.name.endswith(
        "-cp39-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    ), release_wheel.name
    with zipfile.ZipFile(release_wheel) as wheel:
        (info,) = [n for n in wheel.namelist() if n.endswith(".dist-info/WHEEL")]
        tags = wheel_tags(wheel.read(info).decode())
    assert tags == {"cp39-abi3-manylinux2014_x86_64", "cp39-abi3-manylinux_2_17_x86_64"}, tags
    # The tag is only a claim: auditwheel reads the extension's versioned
    # glibc symbols.
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(release_wheel)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'consistent with the following platform tag:\n"manylinux_2_17_x86_64"' in shown, shown


def test_the_release_wheel_has_no_testing_hooks(release_wheel, tmp_path):
    with zipfile.ZipFile(release_wheel) as wheel:
        wheel.extractall(tmp_path)
    # The unpacked wheel comes first on the path, before the installed
    # testing build: the same import a user's program does.
    probe = (
        "import minishard, minishard._minishard as native; "
        "print(minishard.__file__); "
        "print(sorted(n for owner in (native, native.NativeCluster, minishard.Cluster) "
        "for n in dir(owner) if n.startswith('_testing')))"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    where, hooks = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    ).stdout.splitlines()
    assert where.startswith(str(tmp_path)), where
    assert hooks == "[]", hooks


def test_the_tests_run_the_testing_wheel_installed_from_its_file():
    dist = metadata.distribution("minishard")
    installed_from = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    assert installed_from.startswith("file://") and installed_from.endswith(".whl"), installed_from
    assert "cp39-abi3-manylinux_2_17_x86_64" in wheel_tags(dist.read_text("WHEEL") or "")
    assert hasattr(minishard.Cluster, "_testing_cut"), "the testing build, with its hooks"
