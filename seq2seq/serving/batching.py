"""Dynamic batching: concurrent requests to one model gathered into batched calls.

A request becomes a :class:`Job`: its inputs (texts), their cost (source tokens) and a key
naming the options its inputs must share with the others of a batch (beam size, n-best, ...).
The batcher gathers jobs with the key of the oldest waiting one, up to ``budget`` tokens, and
runs them as one call on one of the model's worker threads, while the event loop goes on
accepting requests. It waits for more while they keep coming: it stops once none has come
for ``max_wait`` seconds (counted from the oldest job's arrival or the end of the previous
call, whichever is later, and from each later arrival), after ``10 * max_wait`` in all, or
as soon as as many jobs wait as were active when the previous call ended (its jobs and those
waiting then). Clients that send their next request once answered come back within
milliseconds of each other, and waiting for them keeps one batch of all of them instead of
two halves taking turns; a lone client never waits. Jobs whose key is None (a sampled
generation, with its own seed and streaming callback) run alone.

With several ``workers`` (threads, each computing on ``threads`` torch threads), up to that
many calls run at once, and a call takes at most its share of the active jobs (those waiting
and those in the other calls, divided by the workers): 32 clients on 2 workers keep two
batches of 16 in flight. On 2 CPU cores two batches on one thread each translate more than
one batch on two threads, whose threads wait for each other at every small operator of a
search step (BENCHMARKS.md, "Serving").

A batch that fails is run again one job at a time, so a job that fails fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("seq2seq.serve")

RunBatch = Callable[[Hashable, list[Any]], list[Any]]  # (key, inputs) -> one output per input


@dataclass
class Job:
    key: Hashable | None  # jobs with equal keys may share a call; None: never shared
    inputs: list[Any]
    cost: int = 1  # what counts against the batch budget (source tokens)


@dataclass
class _Waiting:
    job: Job
    future: asyncio.Future[list[Any]]
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Runs the jobs of one model; ``run(key, inputs)`` is called on the worker threads, at
    most ``workers`` calls at once, each computing on ``threads`` torch threads (None: as
    the process does)."""

    def __init__(self, name: str, run: RunBatch, budget: int = 4096,
                 max_wait: float = 0.02, workers: int = 1, threads: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.name = name
        self.run = run
        self.budget = budget
        self.max_wait = max_wait
        self.workers = workers
        self.threads = threads
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"serve-{name}",
                                           initializer=self._init_worker)
        self.waiting: list[_Waiting] = []
        self.running: set[asyncio.Task[None]] = set()  # calls in progress
        self.in_calls = 0  # jobs in those calls
        self.requests = 0  # jobs run
        self.batches = 0  # calls made
        self._ended = 0.0  # when the previous call ended (time.monotonic)
        self._active = budget  # jobs active then: that call's and those waiting for the next
        # (before the first call: unknown, so the first batch waits until arrivals pause)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def _init_worker(self) -> None:
        if self.threads is not None:  # torch's thread count is per thread
            torch.set_num_threads(self.threads)

    def start(self) -> None:
        """Start gathering (in the running event loop); a batcher serves one app at a time."""
        if self._task is not None and not self._task.done():
            raise RuntimeError(f"the batcher of {self.name} is already running")
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop gathering; the calls in progress finish first."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.running:
            await asyncio.wait(self.running)
        self.executor.shutdown(wait=True)

    async def submit(self, job: Job) -> list[Any]:
        """The outputs of ``job``'s inputs, in order (or the exception its run raised)."""
        if self._task is None or self._task.done():
            raise RuntimeError(f"the batcher of {self.name} is not running")
        assert self._wake is not None  # set by start()
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(job, future))
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        assert self._wake is not None  # set by start(), before this task
        while True:
            self.waiting = [w for w in self.waiting if not w.future.done()]  # gone clients
            if not self.waiting or len(self.running) >= self.workers:
                self._wake.clear()
                await self._wake.wait()
                continue
            first = self.waiting[0]
            if first.job.key is not None:
                await self._gather(first)
            batch = self._take(first.job.key, self._share())
            if batch:
                task = asyncio.get_running_loop().create_task(self._run(batch))
                self.running.add(task)
                self.in_calls += len(batch)

    def _share(self) -> int:
        """The most jobs one call takes: the active jobs divided among the workers."""
        active = sum(not w.future.done() for w in self.waiting) + self.in_calls
        return max(1, math.ceil(active / self.workers))

    async def _gather(self, first: _Waiting) -> None:
        """Wait for jobs with ``first``'s key while they keep coming (see the module)."""
        assert self._wake is not None  # set by start()
        start = max(first.arrived, self._ended)
        while True:
            same = [w for w in self.waiting if w.job.key == first.job.key]
            newest = max([start, *(w.arrived for w in same)])
            remaining = min(newest + self.max_wait, start + 10 * self.max_wait) - time.monotonic()
            if (remaining <= 0 or sum(w.job.cost for w in same) >= self.budget
                    or len(same) >= self._active):
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self, key: Hashable | None, most: int) -> list[_Waiting]:
        """The oldest waiting jobs with ``key`` that fit the budget (the first always does),
        ``most`` of them at most."""
        batch: list[_Waiting] = []
        cost = 0
        for waiting in self.waiting:
            if waiting.future.done() or waiting.job.key != key:
                continue
            if batch and (key is None or cost + waiting.job.cost > self.budget
                          or len(batch) >= most):
                break
            batch.append(waiting)
            cost += waiting.job.cost
        taken = set(map(id, batch))
        self.waiting = [w for w in self.waiting if id(w) not in taken]
        return [w for w in batch if not w.future.done()]

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            await self._call(batch)
        finally:
            self.in_calls -= len(batch)
            self.running.discard(asyncio.current_task())
            assert self._wake is not None  # set by start()
            self._wake.set()  # a worker is free

    async def _call(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        inputs = [x for waiting in batch for x in waiting.job.inputs]
        self.batches += 1
        self.requests += len(batch)
        try:
            outputs = await loop.run_in_executor(self.executor, self.run, batch[0].job.key, inputs)
        except Exception as err:
            self._call_ended(batch)
            if len(batch) == 1:
                _settle(batch[0].future, error=err)
                return
            for waiting in batch:  # find the one at fault: each alone
                self.batches += 1
                try:
                    outputs = await loop.run_in_executor(self.executor, self.run,
                                                         waiting.job.key, waiting.job.inputs)
                except Exception as alone:
                    _settle(waiting.future, error=alone)
                else:
                    _settle(waiting.future, outputs)
            return
        self._call_ended(batch)
        start = 0
        for waiting in batch:
            end = start + len(waiting.job.inputs)
            _settle(waiting.future, outputs[start:end])
            start = end

    def _call_ended(self, batch: list[_Waiting]) -> None:
        self._ended = time.monotonic()
        self._active = len(batch) + sum(not w.future.done() for w in self.waiting)


def _settle(future: asyncio.Future[list[Any]], result: Any = None,
            error: BaseException | None = None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
