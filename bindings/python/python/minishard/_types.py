"""Values minishard hands to Python: the health, the status and counters of a
cluster, and the callbacks an application provides.

The values are named tuples (immutable, compared by value, with
``_asdict()``) rather than dataclasses: `dataclasses` imports `inspect`,
which alone would double the time `import minishard` takes.
"""

from __future__ import annotations

import enum
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Dict,
    Generic,
    List,
    Literal,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    TypeVar,
    Union,
)

if TYPE_CHECKING:
    import concurrent.futures

__all__ = [
    "HealthName",
    "DispatchMode",
    "Quorum",
    "Health",
    "Reason",
    "NodeState",
    "LocalState",
    "Owner",
    "Status",
    "Stats",
    "Callbacks",
    "CallbacksLike",
]


HealthName = Literal["degraded", "transition", "available"]
"""The name of a health, where ``wait_until`` takes one: a misspelt name
fails ``mypy --strict``."""

DispatchMode = Literal["thread", "asyncio", "host"]
"""Where callbacks run: ``join(..., dispatch=...)``."""

Quorum = Literal["any", "majority"]
"""Which members a node must see to hold shards: ``join(..., quorum=...)``.
``"any"`` (the default): ``shard_count`` of them; ``"majority"``: a strict
majority of the member list too, so no two nodes ever hold a shard at once
(docs/design.md 6.7)."""

NodeStateName = Literal["unavailable", "connected", "standby", "active", "transition"]
LocalStateName = Literal["idle", "standby", "allocated"]


class Health(str, enum.Enum):
    """The health of a cluster as one node sees it (docs/design.md section 5).

    Members are strings: ``Health.AVAILABLE == "available"`` is true.
    """

    DEGRADED = "degraded"
    """Too few members visible for ``transition_timeout`` (and at start-up):
    this node holds no shard."""
    TRANSITION = "transition"
    """In between: too few members for a short while, an allocation in
    progress, a conflict being resolved."""
    AVAILABLE = "available"
    """Enough members visible, every shard has exactly one owner."""

    def __str__(self) -> str:
        return self.value


class Reason(str, enum.Enum):
    """Why this node's allocation ended, as ``deallocated`` hears it: what
    to do with the state differs (hand it to the winner, persist it, drop
    it). Members are strings: ``Reason.LEFT == "left"`` is true."""

    LOST_CONFLICT = "lost_conflict"
    """It lost a conflict after a split healed: ``winner`` keeps the shard."""
    LEFT = "left"
    """The application left (``leave()``, or the ``with`` block ended)."""
    SHUTDOWN = "shutdown"
    """The cluster object went away without leaving first (collected, or
    the interpreter exited)."""
    DEGRADED = "degraded"
    """Too few members were visible for ``transition_timeout``."""
    REMOVED = "removed"
    """This node is no longer in the member list (its own, or every member
    it reaches refuses it as not theirs)."""

    def __str__(self) -> str:
        return self.value


class HandOff(NamedTuple):
    """What the previous owner of a shard handed off (docs/design.md 11.8):
    the bytes its ``deallocated`` returned, given to ``allocated`` (after it
    left) or ``prolonged`` (after it lost a conflict) when they take a
    ``hand_off`` argument; ``None`` there when it gave nothing or the
    hand-off was lost."""

    node: str
    """The node whose allocation ended."""
    epoch: int
    """The epoch of that allocation."""
    data: bytes
    """The bytes."""


class NodeState(NamedTuple):
    """How this node sees one node: ``state`` is ``"unavailable"``,
    ``"connected"`` (an observer), ``"standby"``, ``"active"`` (then
    ``shard`` is its shard) or ``"transition"``."""

    state: NodeStateName
    shard: Optional[int] = None


class LocalState(NamedTuple):
    """What this node is doing: ``state`` is ``"idle"``, ``"standby"`` or
    ``"allocated"`` (then ``shard`` and ``epoch`` are set)."""

    state: LocalStateName
    shard: Optional[int] = None
    epoch: Optional[int] = None


class Owner(NamedTuple):
    """The owner of a shard and its allocation's epoch."""

    node: str
    epoch: int


class Refusals(NamedTuple):
    """One member's refusals of this node (docs/design.md 6.8)."""

    times: int
    """How many of this node's handshakes it refused (``count`` would shadow
    the tuple's method)."""
    reason: str
    """The latest refusal's kind: ``"wrong_cookie"``, ``"wrong_cluster"``,
    ``"wrong_version"``, ``"not_a_member"`` or
    ``"observer_at_member_address"``."""
    detail: str
    """What the latest refusal said."""
    refusing: bool
    """Whether it refused lately and has not accepted this node since."""


class Status(NamedTuple):
    """The cluster as this node sees it, at one instant."""

    cluster: str
    node: str
    health: Health
    shard_count: int
    allocated: int
    owners: List[Optional[Owner]]
    nodes: Dict[str, NodeState]
    local: LocalState
    refusals: Dict[str, Refusals]
    """Every member that refused this node for a misconfiguration."""
    misconfigured: bool
    """No member accepts this node and some refuse it: it is part of no
    cluster and cannot become available (``wait_until`` raises
    ``MisconfiguredError``)."""
    #: The metadata each node in view published (nodes with none left out).
    metadata: Dict[str, Dict[str, str]] = {}


class Stats(NamedTuple):
    """Counters since join."""

    allocations: int
    deallocations: int
    conflicts_resolved: int
    failed_callbacks: int
    ignored_messages: int
    reconnects: int
    refused_handshakes: int
    protocol_errors: int
    heartbeat_rtt_micros: int


S = TypeVar("S")


class CallbacksLike(Protocol):
    """What ``join`` needs from the callbacks object (any object with these
    methods will do; ``status_changed`` is optional). With
    ``dispatch="asyncio"`` all but ``nodes`` and ``shard_count`` may be
    ``async def``."""

    def nodes(self, cluster: str) -> Sequence[str]: ...
    def shard_count(self, cluster: str) -> int: ...
    def allocated(self, cluster: str, shard: int, epoch: int) -> Any: ...
    def score(self, state: Any) -> Any: ...
    def prolonged(self, loser: str, state: Any, epoch: int) -> Any: ...
    def deallocated(self, winner: Optional[str], state: Any, reason: Reason) -> Any: ...


class Callbacks(Generic[S]):
    """Base class for an application's callbacks (docs/design.md section 3).

    Subclass it and override at least ``nodes``, ``shard_count`` and
    ``allocated``; ``S`` is the type of the state ``allocated`` returns.
    The callbacks of one cluster run one at a time, in order, on its callback
    thread (or on the event loop with ``dispatch="asyncio"``, where every
    callback but ``nodes`` and ``shard_count`` may be ``async def``: the
    engine waits for its coroutine to finish before it moves on). An
    exception is logged once to ``logging.getLogger("minishard.callbacks")``
    with its traceback and handled as a failure: a failed ``allocated``
    gives the shard back, a failed ``score`` loses the conflict.
    """

    def nodes(self, cluster: str) -> Sequence[str]:
        """The member list: every member's advertised ``"host:port"``.
        Asked at join, then periodically."""
        raise NotImplementedError("Callbacks.nodes must be overridden")

    def shard_count(self, cluster: str) -> int:
        """How many shards the cluster keeps (1 to the number of members).
        Asked at join."""
        raise NotImplementedError("Callbacks.shard_count must be overridden")

    def allocated(self, cluster: str, shard: int, epoch: int) -> Union[S, Awaitable[S]]:
        """This node now owns ``shard``: build and return its state.

        ``epoch`` is larger than any this node has seen for the shard: fence
        writes by stale owners with it. (An ``allocated(self, cluster,
        shard)`` without it still works, with a ``DeprecationWarning`` at
        join.)"""
        raise NotImplementedError("Callbacks.allocated must be overridden")

    def score(self, state: S) -> Union[int, Awaitable[int]]:
        """Another node holds the same shard (a healed split): the higher
        score keeps it. Default: 0, leaving the decision to the tie-break
        (older epoch, then smaller address). Late (after ``score_deadline``)
        counts as failed."""
        return 0

    def prolonged(self, loser: str, state: S, epoch: int) -> Union[S, Awaitable[S]]:
        """This node kept its shard against ``loser``: return the state to
        keep (default: unchanged). ``epoch`` is the allocation's epoch from
        now on, above the loser's: a store that takes writes only at an
        epoch at least the highest it has seen refuses the loser and takes
        this node. (A ``prolonged(self, loser, state)`` without it still
        works.)"""
        return state

    def deallocated(
        self, winner: Optional[str], state: S, reason: Reason
    ) -> Optional[Awaitable[None]]:
        """This node no longer owns its shard, for ``reason``: ``winner``
        took it (``Reason.LOST_CONFLICT``), or nobody did (``None``: it left,
        degraded, was removed from the member list, or went away). The
        hand-over completes once this returns (an ``async def`` one: once
        its coroutine finishes). A failed ``allocated`` is followed by no
        ``deallocated``. (A ``deallocated(self, winner, state)`` without
        ``reason`` still works.)"""
        return None

    def status_changed(
        self, cluster: str, old: Health, new: Health
    ) -> Optional[Awaitable[None]]:
        """This node's view of the cluster's health changed."""
        return None

    def handle_request(
        self, state: S, data: bytes
    ) -> Union[bytes, "concurrent.futures.Future[bytes]", Awaitable[bytes]]:
        """A request for this node's shard (``cluster.request`` on any
        node): return the reply's bytes. It runs only inside the allocation
        (after ``allocated`` returned, before ``deallocated`` starts), one at
        a time with the other callbacks. To answer later, from another
        thread, return a ``concurrent.futures.Future`` and set its result
        there; with ``dispatch="asyncio"`` it may be ``async def``. An
        exception fails the request with ``minishard.HandlerError`` (and is
        logged). Default: no handler, every request fails."""
        raise NotImplementedError("this node's callbacks do not override handle_request")
