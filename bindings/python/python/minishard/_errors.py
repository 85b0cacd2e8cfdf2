"""The exceptions of minishard: one base class, `minishard.Error`.

Each subclass also derives from the built-in exception a Python user would
catch for the same trouble (``ValueError`` for a bad setting, ``OSError``
for the network, the built-in ``TimeoutError`` for a wait that ran out), so
generic handlers keep working.
"""

from __future__ import annotations

import builtins

__all__ = [
    "Error",
    "ConfigError",
    "CallbackError",
    "IOError",
    "TimeoutError",
    "ClosedError",
    "InvalidArgumentError",
    "MisconfiguredError",
    "HandlerError",
    "OverloadedError",
    "UncertainError",
]


class Error(Exception):
    """Base class of every exception minishard raises."""


class ConfigError(Error, ValueError):
    """A setting or argument of ``join`` is unusable (an unparsable
    address, an empty cookie, inconsistent timings, a callbacks object
    without a required method, ...). Nothing was left running."""


class CallbackError(ConfigError):
    """``nodes`` or ``shard_count`` failed at ``join``: it raised (the
    exception is this one's ``__cause__``) or answered something unusable."""


class IOError(Error, builtins.OSError):  # noqa: A001 - minishard.IOError by design
    """A network operation failed, e.g. the listen address is taken."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001
    """A wait ran out of time."""


class ClosedError(Error):
    """The cluster handle has left (or never finished joining)."""


class InvalidArgumentError(Error, ValueError):
    """An argument is out of range (a shard that does not exist, an unknown
    health) or the call is not allowed here (``leave`` or ``wait_until``
    from inside one of the same cluster's callbacks)."""


class MisconfiguredError(Error):
    """No member accepts this node and some refuse it: a wrong cookie,
    cluster name or protocol version, or not in their member list. The node
    is part of no cluster and cannot become available, so ``wait_until``
    raises this at once rather than time out; the message names the members
    that refuse it and what they said (``status()["refusals"]`` has them)."""


class HandlerError(Error):
    """The owner's ``handle_request`` failed (the message is its own), or
    dropped its responder without answering."""


class OverloadedError(Error):
    """Too many requests in flight (from this handle, to that owner, or
    waiting at it): the handler did not run; try again later."""


class UncertainError(Error):
    """The connection to the owner was lost after the request was sent:
    the handler may or may not have run. Requests are never sent twice."""
