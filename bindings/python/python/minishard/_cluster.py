"""``join`` and ``Cluster``: the Python face of one node's membership of one
cluster, over the native handle in ``minishard._minishard``.

Lookups (``get_node``, ``shard_map``, ``my_shard``) are the native methods
themselves, so they cost one C call. This module adds what Python users
expect around them: argument checks with clear messages, typed results,
``with`` blocks, asyncio, and leaving every joined cluster at exit.
"""

from __future__ import annotations

import atexit
import math
import numbers
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Set, Tuple, Type, Union

from . import _minishard
from ._errors import (
    ClosedError,
    ConfigError,
    InvalidArgumentError,
    MisconfiguredError,
    TimeoutError,
    UncertainError,
)
from ._loopbridge import LoopBridge
from ._types import (
    CallbacksLike,
    DispatchMode,
    Health,
    HealthName,
    LocalState,
    NodeState,
    Owner,
    Refusals,
    Quorum,
    Stats,
    Status,
)

if TYPE_CHECKING:
    # asyncio, inspect and logging are imported where they are used:
    # `import minishard` stays cheap for programs that never need them.
    import asyncio
    import concurrent.futures
    from types import TracebackType

# A path argument: a str or anything os.fspath takes that gives one.
StrPath = Union[str, "os.PathLike[str]"]

__all__ = ["Cluster", "join"]

_DISPATCH_MODES = ("thread", "asyncio", "host")
_HEALTHS = ("degraded", "transition", "available")
# The numeric settings come from the engine's list (minishard/src/settings.rs):
# each is a keyword of join (tests/test_settings.py holds them to the list).
# Timings are given in seconds.
_TIMINGS = tuple(name for name, unit, *_ in _minishard.SETTINGS if unit == "ms")
# The others count whole units, named in their messages; the engine checks
# every range, naming the setting (README's configuration table).
_LIMITS = {name: unit for name, unit, *_ in _minishard.SETTINGS if unit != "ms"}
# The settings that are a choice of names (the quorum): name -> options.
_CHOICES = {name: options for name, options, _doc in _minishard.CHOICES}
# The largest count the engine takes (a usize).
_COUNT_MAX = 2**64 - 1
# The callbacks that may be `async def` (with dispatch="asyncio"): nodes and
# shard_count are called inside join, which cannot await.
_MAY_BE_ASYNC = (
    "allocated",
    "score",
    "prolonged",
    "deallocated",
    "status_changed",
    "handle_request",
)
# The payload types a request takes.
Data = Union[bytes, bytearray, memoryview]

# Every cluster joined and not yet left. Holding them here means a cluster
# stays joined while the application runs, whether or not it keeps a
# reference (like a thread), and lets the exit hook leave them all.
_joined: Set["Cluster"] = set()
_joined_lock = threading.Lock()


def _health_name(health: Union[Health, HealthName]) -> HealthName:
    if isinstance(health, Health):
        return health.value
    if isinstance(health, str):
        if health not in _HEALTHS:
            raise InvalidArgumentError(
                f"unknown health {health!r}: expected degraded, transition or available"
            )
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


def _time_limit(timeout: Optional[float]) -> Optional[float]:
    """A timeout checked for waits done here: None (or infinity) for no limit."""
    limit = _timeout(timeout)
    if limit is not None and (limit < 0 or math.isnan(limit)):
        raise InvalidArgumentError(
            f"timeout must be a non-negative number of seconds or None, not {limit}"
        )
    return None if limit == math.inf else limit


class Cluster(_minishard.NativeCluster):
    """One node's membership of one cluster. Get one from ``minishard.join``.

    Every method may be called from any thread. Lookups never block and
    never touch the network; methods that wait release the GIL.
    """

    # Set by join(); class defaults keep repr() and leave() safe otherwise.
    _dispatch: DispatchMode = "thread"
    _bridge: Optional[LoopBridge] = None
    _async_callbacks: Tuple[str, ...] = ()

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
            refusals={peer: Refusals(*r) for peer, r in d["refusals"].items()},
            misconfigured=d["misconfigured"],
            metadata=d["metadata"],
        )

    def request(self, shard: int, data: Data, *, timeout: float = 5.0) -> bytes:
        """Sends ``data`` to the owner of ``shard`` and returns its reply
        (docs/design.md 11), waiting with the GIL released. Any node may ask,
        members and observers alike. While no owner is known (a failover, a
        hand-over) it waits for one; a node that is no longer the owner
        passes it on; it is sent to an owner at most once.

        Raises ``minishard.TimeoutError``, ``HandlerError`` (the handler
        raised: its message), ``OverloadedError``, ``UncertainError`` (the
        connection was lost after sending: the handler may or may not have
        run), ``ClosedError``, ``InvalidArgumentError`` (no such shard, data
        over the frame limit, or this node's own shard from inside its own
        callback). With ``dispatch="asyncio"`` on the loop's thread it runs
        the callbacks itself meanwhile; prefer ``await request_async()``
        there."""
        payload = _data(data)
        limit = _request_timeout(timeout)
        pumping = self._pumping_bridge("request", "await cluster.request_async(...)")
        if pumping is None:
            return self._request(shard, payload, limit)
        bridge: LoopBridge = pumping
        result: Dict[str, Any] = {}

        def send() -> None:
            try:
                result["reply"] = self._request(shard, payload, limit)
            except BaseException as error:  # handed to the caller below
                result["error"] = error
            bridge.wake()

        worker = threading.Thread(target=send, name="minishard-request", daemon=True)
        worker.start()
        while worker.is_alive():
            bridge.pump(0.05)
        if "error" in result:
            raise result["error"]
        reply: bytes = result["reply"]
        return reply

    async def request_async(self, shard: int, data: Data, *, timeout: float = 5.0) -> bytes:
        """``request`` for coroutines: the event loop keeps running while
        the request is on its way. It may be awaited from inside an async
        callback, for this node's own shard too (its handler then runs once
        that callback has finished). Cancelling the task abandons the wait,
        not the request."""
        import asyncio

        payload = _data(data)
        limit = _request_timeout(timeout)
        loop = asyncio.get_running_loop()
        replied: asyncio.Future[bytes] = loop.create_future()

        def settle(reply: Optional[Tuple[bytes, str, int]], error: Optional[BaseException]) -> None:
            if replied.done():
                return
            if error is not None:
                replied.set_exception(error)
            elif reply is not None:
                replied.set_result(reply[0])

        def done(reply: Optional[Tuple[bytes, str, int]], error: Optional[BaseException]) -> None:
            try:
                loop.call_soon_threadsafe(settle, reply, error)
            except RuntimeError:
                pass  # The loop has closed: nobody waits any more.

        self._request_async(shard, payload, limit, done)
        return await replied

    def stats(self) -> Stats:
        """Counters since join; after ``leave()``, the final ones."""
        return Stats(**self._stats())

    def wait_until(
        self, health: Union[Health, HealthName], timeout: Optional[float] = None
    ) -> bool:
        """Blocks, with the GIL released, until this node sees ``health``.

        Returns True, or raises ``minishard.TimeoutError`` after ``timeout``
        seconds (None: no limit), ``MisconfiguredError`` (waiting for
        ``"available"``) as soon as no member accepts this node and some
        refuse it (a wrong cookie, cluster name or version: it cannot become
        available), ``ClosedError`` if
        the cluster is left meanwhile, ``KeyboardInterrupt`` on Ctrl-C. With
        ``dispatch="asyncio"``, called on the event loop's thread, it runs
        the callbacks itself while it waits (the loop cannot); with async
        callbacks, use ``wait_until_async`` there instead.
        """
        name = _health_name(health)
        self._check_not_in_callback("wait_until")
        pumping = self._pumping_bridge("wait_until", "await cluster.wait_until_async(...)")
        if pumping is None:
            self._wait_until(name, _timeout(timeout))
            return True
        bridge: LoopBridge = pumping
        limit = _time_limit(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        token = self._watch_health(lambda now: bridge.wake())
        try:
            while self._health() != name:
                why = self._misconfiguration() if name == "available" else None
                if why is not None:
                    raise MisconfiguredError(why)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"health did not become {name} within {limit}s (it is {self._health()})"
                    )
                bridge.pump(left)
        finally:
            self._unwatch_health(token)
        return True

    async def wait_until_async(
        self, health: Union[Health, HealthName], timeout: Optional[float] = None
    ) -> bool:
        """``wait_until`` for coroutines: the event loop keeps running (and,
        with ``dispatch="asyncio"``, keeps running callbacks) meanwhile. It
        is woken by the engine when the health changes. Cancelling the task
        stops the wait."""
        import asyncio

        name = _health_name(health)
        limit = _time_limit(timeout)
        self._check_not_in_callback("wait_until_async")
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        woken = asyncio.Event()
        news: list[Optional[str]] = []

        def settle(now: Optional[str]) -> None:
            news.append(now)
            woken.set()

        def on_change(now: Optional[str]) -> None:
            # On the handle's watch thread: None once the handle stopped; also
            # told when the node turns misconfigured (its health stays). Only
            # what ends the wait wakes the loop.
            ends = (
                now is None
                or now == name
                or (name == "available" and self._misconfiguration() is not None)
            )
            if ends:
                try:
                    loop.call_soon_threadsafe(settle, now)
                except RuntimeError:
                    pass  # The loop has closed: nobody waits any more.

        token = self._watch_health(on_change)
        try:
            while True:
                if None in news:
                    raise ClosedError("the cluster handle has left the cluster")
                if self._health() == name:
                    return True
                why = self._misconfiguration() if name == "available" else None
                if why is not None:
                    raise MisconfiguredError(why)
                woken.clear()
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"health did not become {name} within {limit}s (it is {self._health()})"
                    )
                try:
                    await asyncio.wait_for(woken.wait(), left)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._unwatch_health(token)

    def leave(self) -> None:
        """Leaves gracefully: the shard is handed over at once. Returns once
        ``deallocated`` has run (an async one: once it has finished).
        Calling it again does nothing. Not allowed from inside one of this
        cluster's callbacks; with ``dispatch="asyncio"`` and async
        callbacks, not on the event loop's thread either: use
        ``await leave_async()`` (or ``async with``) there."""
        self._leave(at_exit=False)

    async def leave_async(self) -> None:
        """``leave`` for coroutines: the event loop keeps running (and runs
        the leave's callbacks) while the node leaves. Cancelling the task
        does not stop the leave."""
        import asyncio

        self._check_not_in_callback("leave_async")
        await asyncio.get_running_loop().run_in_executor(None, self._leave, False)

    def _leave(self, at_exit: bool) -> None:
        self._check_not_in_callback("leave")
        if at_exit:
            bridge = self._bridge if self._must_pump() else None
        else:
            bridge = self._pumping_bridge(
                "leave", "await cluster.leave_async() or an async with block"
            )
        self._native_leave(bridge)
        with _joined_lock:
            _joined.discard(self)

    if hasattr(_minishard.NativeCluster, "_testing_crash_native"):
        # Only in the testing build of the extension (its `testing` feature).

        def _testing_crash(self) -> None:
            """TESTING ONLY: stops this node at once, as if its process died:
            no ``deallocated``, no goodbye; peers wait out ``node_grace``."""
            self._testing_crash_native(self._bridge if self._must_pump() else None)
            with _joined_lock:
                _joined.discard(self)

    def _check_not_in_callback(self, what: str) -> None:
        super()._check_not_in_callback(what)
        if self._bridge is not None and self._bridge.inside_callback():
            raise InvalidArgumentError(
                f"{what} cannot be called from inside a callback of the same cluster: "
                "it waits for callbacks to finish"
            )

    # dispatch="asyncio": who runs the callbacks while this thread blocks

    def _must_pump(self) -> bool:
        """Whether this thread, about to wait for the engine, must run the
        callbacks itself: it is the event loop's, or no loop runs them."""
        bridge = self._bridge
        if bridge is None:
            return False
        import asyncio

        return asyncio._get_running_loop() is bridge.loop or not bridge.loop.is_running()

    def _pumping_bridge(self, what: str, instead: str) -> Optional[LoopBridge]:
        """The bridge this thread must pump while it waits in ``what``, or
        None. Refuses to block the running loop's thread when callbacks
        need to await on it."""
        if not self._must_pump():
            return None
        bridge = self._bridge
        import asyncio

        if self._async_callbacks and asyncio._get_running_loop() is not None:
            raise InvalidArgumentError(
                f"{what}() cannot block the event loop's thread: the async callbacks "
                f"({', '.join(self._async_callbacks)}) need the loop to run; use {instead}"
            )
        return bridge

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.leave()

    async def __aenter__(self) -> "Cluster":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.leave_async()

    def __repr__(self) -> str:
        state = "left" if self.closed else self._health()
        return f"<minishard.Cluster {self.name!r} node={self.node} {state}>"


def _data(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgumentError(
        f"data must be bytes, bytearray or memoryview, not {type(data).__name__}"
    )


def _request_timeout(timeout: Any) -> float:
    limit = _time_limit(timeout)
    if limit is None:
        raise InvalidArgumentError("a request needs a finite timeout")
    return limit


def _answer_when_done(future: "concurrent.futures.Future[Any]", responder: Any) -> None:
    """A ``handle_request`` returned a future: answer the request with its
    result once it is done, on whichever thread completes it."""

    def done(f: "concurrent.futures.Future[Any]") -> None:
        try:
            result = f.result()
            if isinstance(result, (bytearray, memoryview)):
                result = bytes(result)
            if not isinstance(result, bytes):
                raise TypeError(
                    f"handle_request's future gave {type(result).__name__}: expected bytes"
                )
        except BaseException as error:
            responder.fail(f"{type(error).__name__}: {error}")
            return
        responder.respond(result)

    future.add_done_callback(done)


def _takes_epoch(callbacks: Any) -> bool:
    """Whether ``callbacks.allocated`` accepts ``(cluster, shard, epoch)``."""
    return _takes(callbacks, "allocated", 3) or _takes(callbacks, "allocated", 4)


def _takes(callbacks: Any, name: str, count: int) -> bool:
    """Whether ``callbacks.<name>`` accepts ``count`` positional arguments."""
    import inspect

    try:
        inspect.signature(getattr(callbacks, name)).bind(*([None] * count))
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def _async_methods(callbacks: Any) -> Tuple[str, ...]:
    import inspect

    names = ("nodes", "shard_count") + _MAY_BE_ASYNC
    return tuple(
        name for name in names if inspect.iscoroutinefunction(getattr(callbacks, name, None))
    )


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
    count = int(value)
    if count < 0:
        raise ConfigError(f"{name} must be a positive number of {_LIMITS[name]}, not {count}")
    if count > _COUNT_MAX:
        raise ConfigError(
            f"{name} must be a number of {_LIMITS[name]} that fits in 64 bits, not {count}"
        )
    return count


def join(
    cluster: str,
    callbacks: CallbacksLike,
    *,
    listen: str,
    cookie: Union[bytes, bytearray, memoryview, str],
    advertise: Optional[str] = None,
    observer: bool = False,
    dispatch: DispatchMode = "thread",
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
    max_requests_in_flight: Optional[int] = None,
    max_requests_per_peer: Optional[int] = None,
    hand_off_wait: Optional[float] = None,
    hand_off_limit: Optional[int] = None,
    quorum: Optional[Quorum] = None,
    tls_cert: Optional[StrPath] = None,
    tls_key: Optional[StrPath] = None,
    tls_ca: Optional[StrPath] = None,
    metadata: Optional[Dict[str, str]] = None,
) -> Cluster:
    """Joins ``cluster`` as the node listening on ``listen`` (``"host:port"``;
    port 0 picks a free one, then the node is known by the bound address).

    ``callbacks`` is any object with the methods of ``minishard.Callbacks``
    (with ``dispatch="asyncio"``, all but ``nodes`` and ``shard_count`` may
    be ``async def``).
    ``cookie`` is the cluster's shared secret (a ``str`` is UTF-8 encoded).
    The numeric settings are README's configuration table (the engine's
    list, ``minishard._minishard.SETTINGS``): timings in seconds, the others
    in whole units (``frame_limit`` in bytes, ``max_handshakes`` and
    ``max_handshakes_per_source`` in connections, ``send_queue`` in frames,
    ``max_requests_in_flight`` and ``max_requests_per_peer`` in requests);
    unset ones keep their defaults, and one out of its range raises
    ``ConfigError`` naming it. ``quorum="majority"`` holds shards only while
    this node sees a strict majority of the member list (and ``shard_count``
    members): at most one side of a split keeps shards, so no two nodes
    ever hold one at once; the default, ``"any"``, keeps both sides of a
    split with enough members working. ``dispatch`` says where callbacks run: ``"thread"`` (a callback
    thread of the cluster's own), ``"asyncio"`` (on ``loop``, by default the
    running loop: callbacks then never run concurrently with your
    coroutines; async callbacks are awaited there before the engine moves
    on), or ``"host"`` (only inside ``cluster.dispatch()``; wait for
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

    ``metadata`` (a small ``{str: str}`` map, at most 64 entries and 4096
    bytes) is published with this node's record: every node sees it in
    ``status().metadata`` and ``node_metadata(node)``. ``max_requests_in_flight``
    (default 4096) and ``max_requests_per_peer`` (default 1024) cap the
    requests this node has in flight, in all and to one peer, and those
    waiting here for its ``handle_request``: beyond them,
    ``OverloadedError``.
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
        import asyncio

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
    async_callbacks = _async_methods(callbacks)
    if async_callbacks and dispatch != "asyncio":
        raise ConfigError(
            f"{', '.join(async_callbacks)}: async def callbacks need dispatch='asyncio'"
        )
    awaited_at_join = [name for name in async_callbacks if name not in _MAY_BE_ASYNC]
    if awaited_at_join:
        raise ConfigError(
            f"{' and '.join(awaited_at_join)} must be plain def: join calls them before "
            "it returns, and cannot await"
        )
    takes_epoch = _takes_epoch(callbacks)
    if not takes_epoch and callable(getattr(callbacks, "allocated", None)):
        import warnings

        warnings.warn(
            "allocated(self, cluster, shard) is deprecated: define "
            "allocated(self, cluster, shard, epoch), which also gets the allocation's epoch",
            DeprecationWarning,
            stacklevel=2,
        )
    if metadata is not None and (
        not isinstance(metadata, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise ConfigError(f"metadata must be a dict of str to str, not {metadata!r}")
    bridge = None if loop is None else LoopBridge(loop)
    given = locals()
    # Any: the native constructor's keywords have a type each.
    seconds: Dict[str, Any] = {
        name: _number(name, given[name]) for name in _TIMINGS if given[name] is not None
    }
    counts: Dict[str, Any] = {
        name: _count(name, given[name]) for name in _LIMITS if given[name] is not None
    }
    choices: Dict[str, str] = {
        name: _choice(name, given[name]) for name in _CHOICES if given[name] is not None
    }

    node = Cluster.__new__(
        Cluster,
        cluster,
        callbacks,
        listen,
        secret,
        advertise=advertise,
        observer=observer,
        host_dispatch=dispatch == "host",
        loop_bridge=None if bridge is None else bridge.run,
        allocated_epoch=takes_epoch,
        prolonged_epoch=_takes(callbacks, "prolonged", 3),
        deallocated_reason=_takes(callbacks, "deallocated", 3),
        allocated_hand_off=_takes(callbacks, "allocated", 4),
        prolonged_hand_off=_takes(callbacks, "prolonged", 4),
        tls_cert=tls_paths["tls_cert"],
        tls_key=tls_paths["tls_key"],
        tls_ca=tls_paths["tls_ca"],
        metadata=metadata,
        seconds=seconds,
        counts=counts,
        choices=choices,
    )
    node._dispatch = dispatch
    node._bridge = bridge
    node._async_callbacks = async_callbacks
    with _joined_lock:
        _joined.add(node)
    return node


def _choice(name: str, value: Any) -> str:
    """A choice's option, by name: anything else is refused here with the
    engine's message (minishard/src/settings.rs)."""
    options = _CHOICES[name]
    if not isinstance(value, str) or value not in options:
        expected = " or ".join(f'"{o}"' for o in options)
        raise ConfigError(f"{name} must be {expected}, not {value!r}")
    return value


def _leave_all_at_exit() -> None:
    with _joined_lock:
        clusters = list(_joined)
    for cluster in clusters:
        try:
            cluster._leave(at_exit=True)
        except BaseException:
            import logging

            logging.getLogger("minishard").exception(
                "leaving cluster %r at exit failed", cluster.name
            )


# atexit runs hooks last-registered first: clusters leave (their last log
# lines queued), then the log thread delivers what is left and stops.
atexit.register(_minishard.shutdown_logging)
atexit.register(_leave_all_at_exit)
