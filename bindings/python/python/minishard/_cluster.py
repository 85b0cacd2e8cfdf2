"""``join`` and ``Cluster``: the Python face of one node's membership of one
cluster, over the native handle in ``minishard._minishard``.

Lookups (``get_node``, ``shard_map``, ``my_shard``) are the native methods
themselves, so they cost one C call. This module adds what Python users
expect around them: argument checks with clear messages, typed results,
``with`` blocks, asyncio, and leaving every joined cluster at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import math
import numbers
import os
import threading
import time
from typing import Any, Dict, Optional, Set, Union

from . import _minishard
from ._errors import ClosedError, ConfigError, InvalidArgumentError, TimeoutError
from ._types import CallbacksLike, Health, LocalState, NodeState, Owner, Stats, Status

# A path argument: a str or anything os.fspath takes that gives one.
StrPath = Union[str, "os.PathLike[str]"]

__all__ = ["Cluster", "join"]

_logger = logging.getLogger("minishard")

_DISPATCH_MODES = ("thread", "asyncio", "host")
_TIMINGS = (
    "heartbeat_interval",
    "heartbeat_timeout",
    "transition_timeout",
    "node_grace",
    "settle",
    "score_deadline",
    "member_poll",
    "allocation_retry",
    "handshake_timeout",
)
# Limits counted in whole units, with the unit their messages name; join
# checks their ranges (README's configuration table).
_LIMITS = {
    "frame_limit": "bytes",
    "max_handshakes": "connections",
    "max_handshakes_per_source": "connections",
    "send_queue": "frames",
}
# The largest count the engine takes (a usize).
_COUNT_MAX = 2**64 - 1
# How often wait_until_async looks at the health.
_ASYNC_POLL = 0.005

# Every cluster joined and not yet left. Holding them here means a cluster
# stays joined while the application runs, whether or not it keeps a
# reference (like a thread), and lets the exit hook leave them all.
_joined: Set["Cluster"] = set()
_joined_lock = threading.Lock()


def _health_name(health: Union[Health, str]) -> str:
    if isinstance(health, str):
        return health
    raise InvalidArgumentError(
        f"health must be a minishard.Health or one of 'degraded', 'transition', "
        f"'available', not {health!r}"
    )


def _timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise InvalidArgumentError(
            f"timeout must be a number of seconds or None, not {timeout!r}"
        )
    return float(timeout)


class Cluster(_minishard.NativeCluster):
    """One node's membership of one cluster. Get one from ``minishard.join``.

    Every method may be called from any thread. Lookups never block and
    never touch the network; methods that wait release the GIL.
    """

    # Set by join(); class defaults keep repr() and leave() safe otherwise.
    _dispatch: str = "thread"
    _loop: Optional[asyncio.AbstractEventLoop] = None
    _reader_fd: Optional[int] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The work (the join) happens in the native __new__.
        pass

    def health(self) -> Health:
        """This node's view of the cluster's health."""
        return Health(self._health())

    def status(self) -> Status:
        """Health, shard count, owners, every node's state and this node's."""
        d = self._status()
        return Status(
            cluster=d["cluster"],
            node=d["node"],
            health=Health(d["health"]),
            shard_count=d["shard_count"],
            allocated=d["allocated"],
            owners=[None if o is None else Owner(*o) for o in d["owners"]],
            nodes={node: NodeState(*state) for node, state in d["nodes"].items()},
            local=LocalState(*d["local"]),
        )

    def stats(self) -> Stats:
        """Counters since join."""
        return Stats(**self._stats())

    def wait_until(
        self, health: Union[Health, str], timeout: Optional[float] = None
    ) -> bool:
        """Blocks, with the GIL released, until this node sees ``health``.

        Returns True, or raises ``minishard.TimeoutError`` after ``timeout``
        seconds (None: no limit), ``ClosedError`` if the cluster is left
        meanwhile, ``KeyboardInterrupt`` on Ctrl-C. With
        ``dispatch="asyncio"``, called on the event loop's thread, it runs
        the pending callbacks itself while it waits (the loop cannot).
        """
        self._wait_until(
            _health_name(health), _timeout(timeout), self._dispatches_here()
        )
        return True

    async def wait_until_async(
        self, health: Union[Health, str], timeout: Optional[float] = None
    ) -> bool:
        """``wait_until`` for coroutines: the event loop keeps running (and,
        with ``dispatch="asyncio"``, keeps running callbacks) meanwhile.
        Cancelling the task stops the wait."""
        try:
            target = Health(_health_name(health))
        except ValueError:
            raise InvalidArgumentError(
                f"unknown health {health!r}: expected degraded, transition or available"
            ) from None
        limit = _timeout(timeout)
        if limit is not None and (limit < 0 or math.isnan(limit)):
            raise InvalidArgumentError(
                f"timeout must be a non-negative number of seconds or None, not {limit}"
            )
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            now = self._health()
            if now == target.value:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"health did not become {target.value} within {limit}s (it is {now})"
                )
            await asyncio.sleep(_ASYNC_POLL if left is None else min(_ASYNC_POLL, left))

    def leave(self) -> None:
        """Leaves gracefully: the shard is handed over at once. Returns once
        ``deallocated`` has run. Calling it again does nothing. Not allowed
        from inside one of this cluster's callbacks; with
        ``dispatch="asyncio"``, call it on the event loop's thread (the
        leave's callbacks run there, inside this call)."""
        self._leave(at_exit=False)

    def _leave(self, at_exit: bool) -> None:
        self._check_not_in_callback("leave")
        if self._reader_fd is not None and not at_exit and self._loop_elsewhere():
            raise InvalidArgumentError(
                "with dispatch='asyncio', call leave() on the event loop's thread: "
                "its callbacks run there"
            )
        self._stop_reader()
        super().leave()
        with _joined_lock:
            _joined.discard(self)

    def _testing_crash(self) -> None:
        """TESTING ONLY: stops this node at once, as if its process died:
        no ``deallocated``, no goodbye; peers wait out ``node_grace``."""
        self._stop_reader()
        super()._testing_crash()
        with _joined_lock:
            _joined.discard(self)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.leave()

    def __repr__(self) -> str:
        state = "left" if self.closed else self._health()
        return f"<minishard.Cluster {self.name!r} node={self.node} {state}>"

    # asyncio dispatch

    def _dispatches_here(self) -> bool:
        """Whether this thread runs the event loop this cluster's callbacks
        are dispatched on."""
        if self._loop is None:
            return False
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _loop_elsewhere(self) -> bool:
        loop = self._loop
        return loop is not None and loop.is_running() and not self._dispatches_here()

    def _on_readable(self) -> None:
        try:
            self.dispatch(64)
        except ClosedError:
            self._stop_reader()

    def _start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = self.fileno()
        assert fd is not None, "host dispatch has a descriptor"
        self._loop = loop
        self._reader_fd = fd
        if self._dispatches_here() or not loop.is_running():
            loop.add_reader(fd, self._on_readable)
        else:
            loop.call_soon_threadsafe(loop.add_reader, fd, self._on_readable)

    def _stop_reader(self) -> None:
        fd, loop = self._reader_fd, self._loop
        self._reader_fd = None
        if fd is None or loop is None or loop.is_closed():
            return
        if self._loop_elsewhere():
            loop.call_soon_threadsafe(loop.remove_reader, fd)
        else:
            loop.remove_reader(fd)


def _takes_epoch(callbacks: Any) -> bool:
    """Whether ``callbacks.allocated`` accepts ``(cluster, shard, epoch)``."""
    try:
        inspect.signature(callbacks.allocated).bind(None, None, None)
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def _number(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}")
    return float(value)


def _count(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an int (a number of {_LIMITS[name]}), not {value!r}")
    if value < 0:
        raise ConfigError(f"{name} must be a positive number of {_LIMITS[name]}, not {value}")
    if value > _COUNT_MAX:
        raise ConfigError(
            f"{name} must be a number of {_LIMITS[name]} that fits in 64 bits, not {value}"
        )
    return int(value)


def join(
    cluster: str,
    callbacks: CallbacksLike,
    *,
    listen: str,
    cookie: Union[bytes, bytearray, memoryview, str],
    advertise: Optional[str] = None,
    observer: bool = False,
    dispatch: str = "thread",
    loop: Optional[asyncio.AbstractEventLoop] = None,
    heartbeat_interval: Optional[float] = None,
    heartbeat_timeout: Optional[float] = None,
    transition_timeout: Optional[float] = None,
    node_grace: Optional[float] = None,
    settle: Optional[float] = None,
    score_deadline: Optional[float] = None,
    member_poll: Optional[float] = None,
    allocation_retry: Optional[float] = None,
    handshake_timeout: Optional[float] = None,
    frame_limit: Optional[int] = None,
    max_handshakes: Optional[int] = None,
    max_handshakes_per_source: Optional[int] = None,
    send_queue: Optional[int] = None,
    tls_cert: Optional[StrPath] = None,
    tls_key: Optional[StrPath] = None,
    tls_ca: Optional[StrPath] = None,
) -> Cluster:
    """Joins ``cluster`` as the node listening on ``listen`` (``"host:port"``;
    port 0 picks a free one, then the node is known by the bound address).

    ``callbacks`` is any object with the methods of ``minishard.Callbacks``.
    ``cookie`` is the cluster's shared secret (a ``str`` is UTF-8 encoded).
    Timings are in seconds; unset ones take the defaults of DESIGN.md
    section 10, as do the limits: ``frame_limit`` (bytes, 4096 to 64 MiB),
    ``max_handshakes`` and ``max_handshakes_per_source`` (connections in
    their handshake, 1 to 65536), ``send_queue`` (frames per peer, 64 to
    1048576). ``dispatch`` says where callbacks run: ``"thread"`` (a callback
    thread of the cluster's own), ``"asyncio"`` (on ``loop``, by default the
    running loop: callbacks then never run concurrently with your
    coroutines), or ``"host"`` (only inside ``cluster.dispatch()``; wait for
    ``cluster.fileno()`` to be readable).

    Calls ``nodes`` and ``shard_count`` and checks everything before it
    returns: a bad argument raises ``ConfigError`` (``CallbackError`` if a
    callback failed), a taken address ``IOError``; then nothing is left
    running. It does not wait for the cluster to be available: see
    ``wait_until``.

    ``tls_cert``, ``tls_key`` and ``tls_ca`` (paths to PEM files, all three
    or none) turn on mutual TLS between the nodes: every node presents a
    certificate signed by the cluster's CA (a member's must be valid for the
    host of its address), and the cookie is still checked on top. A file
    that cannot be read, is not PEM, or a key that does not fit the
    certificate raises ``ConfigError`` naming it.
    """
    if not isinstance(cluster, str) or not cluster:
        raise ConfigError(f"the cluster name must be a non-empty str, not {cluster!r}")
    if not isinstance(listen, str):
        raise ConfigError(f"listen must be a 'host:port' str, not {listen!r}")
    if advertise is not None and not isinstance(advertise, str):
        raise ConfigError(f"advertise must be a 'host:port' str or None, not {advertise!r}")
    if isinstance(cookie, str):
        secret = cookie.encode()
    elif isinstance(cookie, (bytes, bytearray, memoryview)):
        secret = bytes(cookie)
    else:
        raise ConfigError(f"cookie must be bytes or str, not {type(cookie).__name__}")
    if not secret:
        raise ConfigError(
            "the cookie is empty: every node of a cluster needs the same non-empty secret"
        )
    if not isinstance(observer, bool):
        raise ConfigError(f"observer must be a bool, not {observer!r}")
    if dispatch not in _DISPATCH_MODES:
        raise ConfigError(
            f"dispatch must be one of {', '.join(map(repr, _DISPATCH_MODES))}, not {dispatch!r}"
        )
    if dispatch == "asyncio" and loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError(
                "dispatch='asyncio' needs an event loop: call join() from a coroutine "
                "or pass loop="
            ) from None
    if loop is not None and dispatch != "asyncio":
        raise ConfigError("loop= goes with dispatch='asyncio'")
    tls = {"tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca}
    given_tls = [name for name, value in tls.items() if value is not None]
    if given_tls and len(given_tls) != 3:
        missing = ", ".join(name for name, value in tls.items() if value is None)
        raise ConfigError(f"TLS needs tls_cert, tls_key and tls_ca together; missing {missing}")
    tls_paths: Dict[str, Optional[str]] = {}
    for name, value in tls.items():
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{name} must be a path (str or os.PathLike), not {value!r}")
        tls_paths[name] = None if value is None else os.fsdecode(value)
    given = locals()
    timings: Dict[str, Optional[float]] = {name: _number(name, given[name]) for name in _TIMINGS}
    limits: Dict[str, Optional[int]] = {name: _count(name, given[name]) for name in _LIMITS}

    node = Cluster.__new__(
        Cluster,
        cluster,
        callbacks,
        listen,
        secret,
        advertise=advertise,
        observer=observer,
        host_dispatch=dispatch != "thread",
        allocated_epoch=_takes_epoch(callbacks),
        tls_cert=tls_paths["tls_cert"],
        tls_key=tls_paths["tls_key"],
        tls_ca=tls_paths["tls_ca"],
        **timings,
        **limits,
    )
    node._dispatch = dispatch
    if loop is not None:
        node._start_reader(loop)
    with _joined_lock:
        _joined.add(node)
    return node


def _leave_all_at_exit() -> None:
    with _joined_lock:
        clusters = list(_joined)
    for cluster in clusters:
        try:
            cluster._leave(at_exit=True)
        except BaseException:
            _logger.exception("leaving cluster %r at exit failed", cluster.name)


# atexit runs hooks last-registered first: clusters leave (their last log
# lines queued), then the log thread delivers what is left and stops.
atexit.register(_minishard.shutdown_logging)
atexit.register(_leave_all_at_exit)
