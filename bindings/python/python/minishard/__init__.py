"""minishard: keep a fixed number of unique shards allocated across the
processes of a cluster, with failover and split-brain resolution by score.

    import minishard

    class Sessions(minishard.Callbacks[dict]):
        def nodes(self, cluster): return ["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"]
        def shard_count(self, cluster): return 2
        def allocated(self, cluster, shard, epoch): return {}

    with minishard.join("sessions", Sessions(), listen="10.0.0.1:7001", cookie=b"secret") as cluster:
        cluster.wait_until("available", timeout=10)
        print(cluster.get_node(0))

Engine logs go to ``logging.getLogger("minishard.engine")``, callback
failures (one record each, with ``cluster``, ``shard`` and ``callback``
attributes) to ``logging.getLogger("minishard.callbacks")``.
"""

from ._cluster import Cluster, join
from ._errors import (
    CallbackError,
    ClosedError,
    ConfigError,
    Error,
    HandlerError,
    InvalidArgumentError,
    MisconfiguredError,
    OverloadedError,
    UncertainError,
)
# Not in __all__: a star import must not shadow the built-ins of these names.
from ._errors import IOError as IOError
from ._errors import TimeoutError as TimeoutError
from ._minishard import __version__
from ._types import (
    Callbacks,
    CallbacksLike,
    DispatchMode,
    Health,
    HealthName,
    LocalState,
    NodeState,
    Owner,
    HandOff,
    Quorum,
    Reason,
    Refusals,
    Stats,
    Status,
)

__all__ = [
    "join",
    "Cluster",
    "Callbacks",
    "CallbacksLike",
    "Health",
    "HandOff",
    "Reason",
    "HealthName",
    "DispatchMode",
    "Quorum",
    "Status",
    "Refusals",
    "Stats",
    "NodeState",
    "LocalState",
    "Owner",
    "Error",
    "ConfigError",
    "CallbackError",
    "ClosedError",
    "InvalidArgumentError",
    "MisconfiguredError",
    "HandlerError",
    "OverloadedError",
    "UncertainError",
    "__version__",
]
