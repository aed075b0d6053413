"""Micro-batching: requests that arrive within ``max_wait_ms`` of the first one share a forward pass.

The forward pass runs in a single worker thread so the event loop keeps accepting and parsing
requests meanwhile; requests that queue up while the model is busy form the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_lab.serve.protocol import RequestError

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    actions: np.ndarray  # (K, A)
    batch_size: int


class Overloaded(RequestError):
    def __init__(self, pending: int):
        super().__init__(f"server busy: {pending} requests already waiting; retry later", status=503)


class MicroBatcher:
    def __init__(self, engine, *, max_batch_size: int, max_wait_ms: float, max_pending: int):
        self.engine = engine
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000.0
        self.max_pending = max_pending
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vla-serve-model")
        self.batch_sizes: Counter[int] = Counter()
        self.forward_ms_total = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vla-serve-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self.queue.empty():
            _, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(RequestError("server shutting down", status=503))
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, prepared: Any) -> Prediction:
        if self.queue.qsize() >= self.max_pending:
            raise Overloaded(self.queue.qsize())
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((prepared, fut))
        return await fut

    def stats(self) -> dict[str, Any]:
        batches = sum(self.batch_sizes.values())
        served = sum(size * n for size, n in self.batch_sizes.items())
        return {
            "batches": batches,
            "batched_requests": served,
            "max_batch_size_seen": max(self.batch_sizes, default=0),
            "mean_batch_size": round(served / batches, 3) if batches else 0.0,
            "batch_size_histogram": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "pending": self.queue.qsize(),
            "forward_ms_mean": round(self.forward_ms_total / batches, 3) if batches else 0.0,
        }

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.max_wait
        while len(items) < self.max_batch_size:
            if not self.queue.empty():
                items.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        # a client that gave up while waiting needs no answer
        return [(p, f) for p, f in items if not f.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            if not items:
                continue
            start = time.perf_counter()
            try:
                actions = await loop.run_in_executor(self.executor, self._forward, [p for p, _ in items])
            except Exception as e:  # never seen with validated input: answer 500, keep serving
                log.exception("batched forward pass of %d requests failed", len(items))
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(RequestError(f"inference failed: {type(e).__name__}: {e}", 500))
                continue
            self.forward_ms_total += 1000 * (time.perf_counter() - start)
            self.batch_sizes[len(items)] += 1
            for i, (_, fut) in enumerate(items):
                if not fut.done():
                    fut.set_result(Prediction(actions[i], len(items)))

    def _forward(self, prepared: list[Any]) -> np.ndarray:
        return self.engine.predict(prepared)
