"""Values minishard hands to Python: the health, the status and counters of a
cluster, and the callbacks an application provides."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Generic, List, Optional, Sequence, TypeVar

try:  # Python 3.8+ has Protocol in typing; keep the import explicit.
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]

__all__ = [
    "Health",
    "NodeState",
    "LocalState",
    "Owner",
    "Status",
    "Stats",
    "Callbacks",
    "CallbacksLike",
]


class Health(str, enum.Enum):
    """The health of a cluster as one node sees it (DESIGN.md section 5).

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


@dataclass(frozen=True)
class NodeState:
    """How this node sees one node: ``state`` is ``"unavailable"``,
    ``"connected"`` (an observer), ``"standby"``, ``"active"`` (then
    ``shard`` is its shard) or ``"transition"``."""

    state: str
    shard: Optional[int] = None


@dataclass(frozen=True)
class LocalState:
    """What this node is doing: ``state`` is ``"idle"``, ``"standby"`` or
    ``"allocated"`` (then ``shard`` and ``epoch`` are set)."""

    state: str
    shard: Optional[int] = None
    epoch: Optional[int] = None


@dataclass(frozen=True)
class Owner:
    """The owner of a shard and its allocation's epoch."""

    node: str
    epoch: int


@dataclass(frozen=True)
class Status:
    """The cluster as this node sees it, at one instant."""

    cluster: str
    node: str
    health: Health
    shard_count: int
    allocated: int
    owners: List[Optional[Owner]]
    nodes: Dict[str, NodeState] = field(default_factory=dict)
    local: LocalState = field(default_factory=lambda: LocalState("idle"))


@dataclass(frozen=True)
class Stats:
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
    methods will do; ``status_changed`` is optional)."""

    def nodes(self, cluster: str) -> Sequence[str]: ...
    def shard_count(self, cluster: str) -> int: ...
    def allocated(self, cluster: str, shard: int) -> Any: ...
    def score(self, state: Any) -> int: ...
    def prolonged(self, loser: str, state: Any) -> Any: ...
    def deallocated(self, winner: Optional[str], state: Any) -> None: ...


class Callbacks(Generic[S]):
    """Base class for an application's callbacks (DESIGN.md section 3).

    Subclass it and override at least ``nodes``, ``shard_count`` and
    ``allocated``; ``S`` is the type of the state ``allocated`` returns.
    The callbacks of one cluster run one at a time, in order, on its callback
    thread (or on the event loop with ``dispatch="asyncio"``). An exception
    is logged to ``logging.getLogger("minishard")`` with its traceback and
    handled as a failure: a failed ``allocated`` gives the shard back, a
    failed ``score`` loses the conflict.
    """

    def nodes(self, cluster: str) -> Sequence[str]:
        """The member list: every member's advertised ``"host:port"``.
        Asked at join, then periodically."""
        raise NotImplementedError("Callbacks.nodes must be overridden")

    def shard_count(self, cluster: str) -> int:
        """How many shards the cluster keeps (1 to the number of members).
        Asked at join."""
        raise NotImplementedError("Callbacks.shard_count must be overridden")

    def allocated(self, cluster: str, shard: int) -> S:
        """This node now owns ``shard``: build and return its state.

        Define it as ``allocated(self, cluster, shard, epoch=0)`` to also get
        the allocation's epoch (larger than any this node has seen for the
        shard: fence writes by stale owners with it). ``Cluster.my_shard()``
        gives it too, once this returns."""
        raise NotImplementedError("Callbacks.allocated must be overridden")

    def score(self, state: S) -> int:
        """Another node holds the same shard (a healed split): the higher
        score keeps it. Default: 0, leaving the decision to the tie-break
        (older epoch, then smaller address)."""
        return 0

    def prolonged(self, loser: str, state: S) -> S:
        """This node kept its shard against ``loser``: return the state to
        keep (default: unchanged)."""
        return state

    def deallocated(self, winner: Optional[str], state: S) -> None:
        """This node no longer owns its shard: ``winner`` took it, or nobody
        did (``None``: degraded, leave, exit)."""

    def status_changed(self, cluster: str, old: Health, new: Health) -> None:
        """This node's view of the cluster's health changed."""
