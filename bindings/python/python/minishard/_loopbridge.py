"""Callbacks on an asyncio event loop: ``join(..., dispatch="asyncio")``.

The engine runs a cluster's callbacks one at a time on a callback thread of
its own. With ``dispatch="asyncio"`` that thread hands each call to the
cluster's ``LoopBridge``, which runs it on the event loop's thread (a plain
method as a loop callback, an ``async def`` one as a task), and waits until
the method has returned or its coroutine has finished. So callbacks never
run alongside the application's coroutines (except at an ``await`` inside
an async callback), and the engine moves on only once an async callback is
done; its deadlines (``score_deadline``) count from the moment it asked, for
async callbacks as for plain ones.

A thread that waits for the engine while nobody else would run the calls
(the loop's own thread blocked in ``leave()`` or ``wait_until()``, or any
thread once the loop has stopped, as at interpreter exit) runs them itself
through ``pump``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Deque, Optional, Tuple

if TYPE_CHECKING:
    import asyncio

__all__ = ["LoopBridge"]


class _Call:
    """One callback handed over by the engine's callback thread."""

    __slots__ = ("method", "args", "_done", "_result", "_error")

    def __init__(self, method: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self.method = method
        self.args = args
        self._done = threading.Event()
        self._result: Any = None
        self._error: Optional[BaseException] = None

    def finish(self, result: Any) -> None:
        self._result = result
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def outcome(self) -> Any:
        """Waits (the GIL released) for the call to be run, then returns its
        result or raises its exception."""
        self._done.wait()
        error, self._error = self._error, None
        if error is not None:
            raise error
        return self._result


def _awaitable(value: Any) -> bool:
    return hasattr(type(value), "__await__")


def _close(awaitable: Any) -> None:
    # A coroutine dropped without being awaited would warn when collected.
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


class LoopBridge:
    """Runs one cluster's callbacks on ``loop`` for the engine's callback
    thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._changed = threading.Condition()
        self._calls: Deque[_Call] = deque()
        self._woken = False
        # The thread running a plain callback now, and the task awaiting an
        # async one: calls that wait for this cluster's callbacks are refused
        # from inside them.
        self._running_thread: Optional[int] = None
        self._task: Optional[asyncio.Task[None]] = None

    # The engine's callback thread

    def run(self, method: Callable[..., Any], args: Tuple[Any, ...]) -> Any:
        """Runs ``method(*args)`` on the loop, awaits what it returns if it is
        awaitable, and returns the result (or raises its exception)."""
        call = _Call(method, args)
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()
        try:
            self.loop.call_soon_threadsafe(self._run_next)
        except RuntimeError:
            pass  # The loop is closed: the next leave() runs it (pump).
        return call.outcome()

    # The threads that can run calls

    def _run_next(self) -> None:
        """On the loop, soon after ``run``: runs the call if no blocked
        thread has taken it meanwhile."""
        call = self._take()
        if call is not None:
            self._start(call, pumping=False)

    def pump(self, timeout: Optional[float]) -> None:
        """On a thread that waits for the engine while nobody else would run
        the calls: waits up to ``timeout`` seconds (None: no limit) for a call
        or a ``wake()``, then runs the calls that are waiting."""
        with self._changed:
            if not self._calls and not self._woken:
                self._changed.wait(timeout)
            self._woken = False
        while True:
            call = self._take()
            if call is None:
                return
            self._start(call, pumping=True)

    def wake(self) -> None:
        """Ends a ``pump`` wait early: what it waited for may have happened."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def inside_callback(self) -> bool:
        """Whether the caller runs inside one of this cluster's callbacks."""
        if self._running_thread == threading.get_ident():
            return True
        task = self._task
        if task is None:
            return False
        import asyncio

        try:
            return asyncio.current_task() is task
        except RuntimeError:  # no loop runs in this thread
            return False

    def _take(self) -> Optional[_Call]:
        with self._changed:
            return self._calls.popleft() if self._calls else None

    def _start(self, call: _Call, pumping: bool) -> None:
        self._running_thread = threading.get_ident()
        try:
            result = call.method(*call.args)
        except BaseException as error:
            call.fail(error)
            if isinstance(error, Exception):
                return
            # KeyboardInterrupt, SystemExit: on to the loop (or the blocked
            # call), as from any other callback it runs.
            raise
        finally:
            self._running_thread = None
        if _awaitable(result):
            self._await(call, result, pumping)
        else:
            call.finish(result)

    def _await(self, call: _Call, awaitable: Awaitable[Any], pumping: bool) -> None:
        import asyncio

        here = asyncio._get_running_loop()
        if here is self.loop and not pumping:
            self._task = self.loop.create_task(self._complete(call, awaitable))
        elif here is None and self.loop.is_running():
            # Taken by a blocked thread just as the loop started again.
            asyncio.run_coroutine_threadsafe(self._complete(call, awaitable), self.loop)
        elif here is None and not self.loop.is_closed():
            self.loop.run_until_complete(self._complete(call, awaitable))
        elif here is None:
            # The loop is gone (interpreter exit after asyncio.run): a fresh
            # one for this coroutine, which must not need the old one's.
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._complete(call, awaitable))
            finally:
                loop.close()
        else:
            _close(awaitable)
            call.fail(
                RuntimeError(
                    "an async callback cannot run while the event loop's thread is "
                    "blocked in leave() or wait_until(): use await cluster.leave_async() "
                    "or await cluster.wait_until_async()"
                )
            )

    async def _complete(self, call: _Call, awaitable: Awaitable[Any]) -> None:
        try:
            call.finish(await awaitable)
        except BaseException as error:
            call.fail(error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._task = None
