# Type stubs for the native extension. Its public face is minishard.Cluster
# (a subclass of NativeCluster) and minishard.join; these are internals.

from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Type, TypeVar

_C = TypeVar("_C", bound="NativeCluster")
_HealthName = Literal["degraded", "transition", "available"]

__version__: str
# Every numeric setting: (name, unit, default, min, max, doc), the unit
# "ms" for a timing (minishard/src/settings.rs).
SETTINGS: Tuple[Tuple[str, str, int, int, int, str], ...]
# Every setting that is a choice of names: (name, options, doc), the
# default first (minishard/src/settings.rs).
CHOICES: Tuple[Tuple[str, List[str], str], ...]

def shutdown_logging() -> None: ...

class NativeCluster:
    def __new__(
        cls: Type[_C],
        name: str,
        callbacks: Any,
        listen: str,
        cookie: bytes,
        *,
        advertise: Optional[str] = ...,
        observer: bool = ...,
        host_dispatch: bool = ...,
        loop_bridge: Optional[Callable[[Callable[..., Any], Tuple[Any, ...]], Any]] = ...,
        allocated_epoch: bool = ...,
        prolonged_epoch: bool = ...,
        deallocated_reason: bool = ...,
        allocated_hand_off: bool = ...,
        prolonged_hand_off: bool = ...,
        seconds: Optional[Dict[str, float]] = ...,
        counts: Optional[Dict[str, int]] = ...,
        choices: Optional[Dict[str, str]] = ...,
        tls_cert: Optional[str] = ...,
        tls_key: Optional[str] = ...,
        tls_ca: Optional[str] = ...,
        metadata: Optional[Dict[str, str]] = ...,
    ) -> _C: ...
    @property
    def name(self) -> str:
        """The cluster's name."""
    @property
    def node(self) -> str:
        """This node's advertised address, "host:port"."""
    @property
    def closed(self) -> bool:
        """True once the handle has left."""
    def get_node(self, shard: int) -> Optional[str]:
        """The owner of `shard` in this node's view, or None. Lock-free."""
    def shard_map(self) -> List[Optional[str]]:
        """The owner of every shard (None where there is none)."""
    def my_shard(self) -> Optional[Tuple[int, int]]:
        """(shard, epoch) if this node owns a shard."""
    def dispatch(self, max: int = ...) -> int:
        """dispatch="host": runs up to `max` pending callbacks here."""
    def fileno(self) -> Optional[int]:
        """dispatch="host": readable while callbacks are pending."""
    def node_metadata(self, node: str) -> Optional[Dict[str, str]]:
        """The metadata `node` published, or None (not in view, or none)."""
    def _request(self, shard: int, data: bytes, timeout: float) -> bytes: ...
    def _request_async(
        self,
        shard: int,
        data: bytes,
        timeout: float,
        done: Callable[[Optional[Tuple[bytes, str, int]], Optional[BaseException]], None],
    ) -> None: ...
    def _native_leave(self, pump: Optional[Any] = ...) -> None: ...
    def _health(self) -> _HealthName: ...
    def _status(self) -> Dict[str, Any]: ...
    def _misconfiguration(self) -> Optional[str]: ...
    def _stats(self) -> Dict[str, int]: ...
    def _wait_until(self, health: _HealthName, timeout: Optional[float] = ...) -> None: ...
    def _watch_health(self, watcher: Callable[[Optional[_HealthName]], None]) -> int: ...
    def _unwatch_health(self, token: int) -> None: ...
    def _check_not_in_callback(self, what: str) -> None: ...
    # Only in builds with the `testing` cargo feature (the package's tests),
    # never in the wheel users install.
    def _testing_cut(self, peer: str) -> None:
        """TESTING ONLY: drop all traffic with `peer` until healed."""
    def _testing_heal(self, peer: str) -> None:
        """TESTING ONLY: restore traffic with `peer`."""
    def _testing_heal_all(self) -> None:
        """TESTING ONLY: restore traffic with every peer."""
    def _testing_crash_native(self, pump: Optional[Any] = ...) -> None:
        """TESTING ONLY: stop at once, as if the process died."""

class Responder:
    """Answers one request, once, from any thread (what a handle_request
    that returned a concurrent.futures.Future is answered through)."""
    @property
    def epoch(self) -> int: ...
    def respond(self, data: bytes) -> None: ...
    def fail(self, message: str) -> None: ...
