"""Group commit: storage calls that arrive while a commit is in flight join the next one.

Theory of operation: every call becomes a `Job` in a queue. When no batch is running, the
calling task takes the whole queue to the database's worker thread, where the driver runs the
jobs in one transaction (each in a savepoint, so one failing job fails alone) and commits
once: one fsync for the batch instead of one per write. Calls made meanwhile queue up and
form the next batch, taken by the same task as soon as the thread returns. Each caller is
released only after the commit that holds its write, so "returned" still means "durable".

The batch runner is shielded from cancellation: the jobs it carries belong to other tasks
too, and a half-taken queue would leave them waiting forever. A cancelled caller therefore
waits for its batch to finish, as it did when every call was its own thread hand-off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

from xmppd.storage import probes

T = TypeVar("T")


class Job(Generic[T]):
    """One storage call: `fn` runs in the worker thread; `result` or `error` comes back."""

    __slots__ = ("what", "fn", "result", "error", "done")

    def __init__(self, what: str, fn: Callable[[Any], T]) -> None:
        self.what = what
        self.fn = fn
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False


def fail_all(jobs: list[Job[Any]], error: BaseException | None) -> None:
    """A batch's transaction is gone: every job in it failed, with its own error if it had
    one; results from before the failure were rolled back with it."""
    for job in jobs:
        job.result = None
        job.error = job.error or error


class GroupCommit:
    """Queue jobs; run each batch with `run_batch(jobs)` in a worker thread under `limiter`,
    at most `parallel` batches at once (one per connection the driver has)."""

    __slots__ = (
        "_run_batch",
        "_limiter",
        "_parallel",
        "_queue",
        "_running",
        "_finished",
        "batches",
        "jobs",
    )

    def __init__(
        self,
        run_batch: Callable[[list[Job[Any]]], None],
        limiter: trio.CapacityLimiter,
        parallel: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self._limiter = limiter
        self._parallel = parallel
        self._queue: list[Job[Any]] = []
        self._running = 0
        self._finished = trio.Event()  # set after every batch; waiters re-check their job
        self.batches = 0  # counters for tests and benchmarks
        self.jobs = 0

    async def submit(self, job: Job[T]) -> T:
        started = probes.clock()
        self._queue.append(job)
        with trio.CancelScope(shield=True):
            if self._running >= self._parallel:
                while not job.done:
                    await self._finished.wait()
            else:
                await self._drain()
        probes.call(probes.clock() - started, job.error)  # latency, database errors
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    async def _drain(self) -> None:
        self._running += 1
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await trio.to_thread.run_sync(self._run_batch, batch, limiter=self._limiter)
                except BaseException as exc:  # the runner itself failed: fail its jobs
                    for job in batch:
                        if not job.done:
                            job.error = exc
                self.batches += 1
                self.jobs += len(batch)
                for job in batch:
                    job.done = True
                self._finished.set()
                self._finished = trio.Event()
        finally:
            self._running -= 1
