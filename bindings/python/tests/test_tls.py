"""Mutual TLS from Python: join(..., tls_cert=, tls_key=, tls_ca=), with
certificates written by the engine's test helper (`cargo run -p minishard
--example test-certs`): a cluster CA's nodes converge, a node whose
certificate comes from another CA is refused, and bad arguments or files
are ConfigErrors that name them."""

from __future__ import annotations

import pathlib
import subprocess
from typing import Dict

import pytest

import minishard
from conftest import COOKIE, FAST, Local, Recorder, eventually, free_addresses

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["cargo", "run", "-q", "-p", "minishard", "--example", "test-certs", "--", str(directory)],
        cwd=REPO,
        check=True,
    )
    return directory


def tls_files(certs: pathlib.Path, name: str = "node", ca: str = "ca") -> Dict[str, str]:
    return dict(
        tls_cert=str(certs / f"{name}.pem"),
        tls_key=str(certs / f"{name}-key.pem"),
        tls_ca=str(certs / f"{ca}.pem"),
    )


def test_three_nodes_over_mutual_tls_converge(certs: pathlib.Path) -> None:
    local = Local("tls", 3, 2, **tls_files(certs))
    try:
        local.converged()
    finally:
        for c in local.running():
            c.leave()


def test_a_node_with_a_certificate_from_another_ca_is_refused(certs: pathlib.Path) -> None:
    local = Local("tls-other", 3, 2, **tls_files(certs))
    try:
        local.converged()
        # A fourth member, in everybody's list, with the wrong CA.
        address = free_addresses(1)[0]
        local.members.append(address)
        stranger = minishard.join(
            "tls-other",
            Recorder(local.members, 2, address),
            listen=address,
            cookie=COOKIE,
            **dict(FAST, **tls_files(certs, "other", "other-ca")),
        )
        try:
            assert eventually(
                5, lambda: sum(c.stats().refused_handshakes for c in local.running()) > 0
            )
            assert stranger.my_shard() is None
            assert stranger.health() != "available"
            assert all(c.stats().reconnects == 0 for c in local.running())
            local.converged(1)
        finally:
            stranger.leave()
    finally:
        for c in local.running():
            c.leave()


def test_tls_arguments_go_together_and_bad_files_are_named(certs: pathlib.Path) -> None:
    address = free_addresses(1)[0]
    app = Recorder([address], 1, address)
    with pytest.raises(minishard.ConfigError, match="missing tls_key"):
        minishard.join(
            "tls-errors",
            app,
            listen=address,
            cookie=COOKIE,
            tls_cert=certs / "node.pem",
            tls_ca=certs / "ca.pem",
        )
    with pytest.raises(minishard.ConfigError, match="tls_ca must be a path"):
        minishard.join(
            "tls-errors",
            app,
            listen=address,
            cookie=COOKIE,
            tls_cert="a",
            tls_key="b",
            tls_ca=3,  # type: ignore[arg-type]
        )
    with pytest.raises(minishard.ConfigError, match="missing.pem"):
        minishard.join(
            "tls-errors",
            app,
            listen=address,
            cookie=COOKIE,
            tls_cert=certs / "node.pem",
            tls_key=certs / "missing.pem",
            tls_ca=certs / "ca.pem",
        )
    with pytest.raises(minishard.ConfigError, match="does not fit certificate"):
        minishard.join(
            "tls-errors",
            app,
            listen=address,
            cookie=COOKIE,
            **tls_files(certs, "node", "ca") | {"tls_key": str(certs / "other-key.pem")},
        )
