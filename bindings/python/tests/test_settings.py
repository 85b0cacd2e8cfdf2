"""minishard.join's keywords are the engine's list of settings
(minishard/src/settings.rs, exported as minishard._minishard.SETTINGS and
CHOICES): one keyword per setting, in seconds for a timing, an int for a
count, a Literal of names for a choice, each refused out of its range with
the engine's message naming it."""

from __future__ import annotations

import inspect
import typing

import pytest

import minishard
from minishard import _minishard
from conftest import COOKIE, free_addresses

# join's keywords that are not numeric settings.
OTHERS = {
    "listen", "cookie", "advertise", "observer", "dispatch", "loop",
    "tls_cert", "tls_key", "tls_ca", "metadata",
}


def test_every_setting_is_a_keyword_of_join_and_nothing_else_is() -> None:
    choices = {name: options for name, options, _doc in _minishard.CHOICES}
    names = [s[0] for s in _minishard.SETTINGS] + list(choices)
    assert len(names) >= 13 and len(set(names)) == len(names)
    signature = inspect.signature(minishard.join)
    keywords = {
        name for name, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY
    }
    assert keywords - OTHERS == set(names), (
        "join's keywords and the settings differ: "
        f"missing {set(names) - keywords}, extra {keywords - OTHERS - set(names)}"
    )
    for name, unit, *_ in _minishard.SETTINGS:
        assert signature.parameters[name].default is None, name
        # The annotations are text (`from __future__ import annotations`).
        wanted = "Optional[float]" if unit == "ms" else "Optional[int]"
        annotation = signature.parameters[name].annotation
        assert annotation == wanted, f"{name}: {annotation}, expected {wanted}"
    for name, options in choices.items():
        # A choice is typed as a Literal of its options, exported by name
        # (quorum: minishard.Quorum).
        alias = name.title().replace("_", "")
        assert signature.parameters[name].default is None, name
        assert signature.parameters[name].annotation == f"Optional[{alias}]", name
        assert typing.get_args(getattr(minishard, alias)) == tuple(options), name


@pytest.mark.parametrize("setting", _minishard.SETTINGS, ids=lambda s: s[0])
def test_a_value_out_of_range_is_refused_naming_the_setting(setting: tuple) -> None:
    name, unit, default, low, high, _doc = setting
    [address] = free_addresses(1)

    class One(minishard.Callbacks[None]):
        def nodes(self, cluster: str) -> list[str]:
            return [address]
        def shard_count(self, cluster: str) -> int:
            return 1
        def allocated(self, cluster: str, shard: int, epoch: int) -> None:
            return None

    too_big = (high + 1) / 1000 if unit == "ms" else high + 1
    with pytest.raises(minishard.ConfigError, match=f"{name} must be between"):
        minishard.join("settings", One(), listen=address, cookie=COOKIE, **{name: too_big})
    if low > 0 and unit != "ms":
        with pytest.raises(minishard.ConfigError, match=f"{name} must be between"):
            minishard.join("settings", One(), listen=address, cookie=COOKIE, **{name: low - 1})


@pytest.mark.parametrize("choice", _minishard.CHOICES, ids=lambda c: c[0])
def test_a_choice_other_than_its_options_is_refused_naming_the_setting(choice: tuple) -> None:
    name, options, _doc = choice
    [address] = free_addresses(1)

    class One(minishard.Callbacks[None]):
        def nodes(self, cluster: str) -> list[str]:
            return [address]
        def shard_count(self, cluster: str) -> int:
            return 1
        def allocated(self, cluster: str, shard: int, epoch: int) -> None:
            return None

    expected = " or ".join(f'"{o}"' for o in options)
    for bad in ["most", options[-1].upper(), 1, b"any"]:
        with pytest.raises(minishard.ConfigError, match=f"{name} must be {expected}, not"):
            minishard.join("settings", One(), listen=address, cookie=COOKIE, **{name: bad})
    for good in options:
        minishard.join("settings", One(), listen=address, cookie=COOKIE, **{name: good}).leave()
