"""Misconfiguration speaks (docs/design.md 6.8): a node that no member
accepts, because its cookie differs, never becomes available; waiting for it
raises ``MisconfiguredError`` naming the member that refuses it, and
``status()`` counts the refusals. The node that was serving keeps its shard."""

from __future__ import annotations

import asyncio
import time

import pytest

import minishard
from conftest import BOUND, COOKIE, FAST, Recorder, eventually, free_addresses


def test_a_node_with_another_cookie_raises_misconfigured_and_never_takes_the_shard():
    good_address, bad_address = free_addresses(2)
    members = [good_address, bad_address]
    good_app = Recorder(members, 1, good_address)
    good = minishard.join("misconfigured", good_app, listen=good_address, cookie=COOKIE, **FAST)
    bad_app = Recorder(members, 1, bad_address)
    bad = None
    try:
        good.wait_until("available", timeout=BOUND)
        bad = minishard.join(
            "misconfigured", bad_app, listen=bad_address, cookie=b"another-cookie", **FAST
        )
        started = time.monotonic()
        with pytest.raises(minishard.MisconfiguredError) as raised:
            bad.wait_until("available", timeout=30)
        assert time.monotonic() - started < 30, "it raised, it did not time out"
        assert isinstance(raised.value, minishard.Error)
        assert good_address in str(raised.value) and "wrong_cookie" in str(raised.value)

        # The asyncio wait says the same.
        with pytest.raises(minishard.MisconfiguredError):
            asyncio.run(bad.wait_until_async("available", timeout=30))

        status = bad.status()
        assert status.misconfigured
        refusal = status.refusals[good_address]
        assert isinstance(refusal, minishard.Refusals)
        assert refusal.reason == "wrong_cookie" and refusal.refusing and refusal.times >= 1
        assert bad.my_shard() is None
        assert bad_app.journal.of("allocated") == []

        # The member that was serving keeps the shard and shows the refusals.
        assert good.health() == minishard.Health.AVAILABLE
        assert good.get_node(0) == good_address
        assert not good.status().misconfigured
        assert eventually(BOUND, lambda: bad_address in good.status().refusals)
    finally:
        if bad is not None:
            bad.leave()
        good.leave()
