"""Dynamic batching: requests from many clients queue here; one worker thread takes what arrived within `max_wait`
(up to `max_batch` texts), runs each adapter's texts as one batch, and answers every request.

The worker is the only thread that touches the models, so loading and unloading runs (admin requests) queue here too
and never race a batch. The predictions of a batch go to the pool in one call: runs that mix in a batch share one
forward pass, any other run gets a pass of its own (inference/pool.py); generation runs per adapter and settings."""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..inference.generate import chat_ids, prompt_ids
from ..inference.pool import RunPool
from ..model.generation import generate_batch


@dataclass
class Job:
    """One request's work: `predict` (texts), `generate` (prompts: strings or chat message lists), or `call`
    (`action(pool)`, e.g. loading a run). Its result or error comes back through `future`."""

    kind: str
    adapter: str = ""
    items: list = field(default_factory=list)
    settings: Any = None  # GenerationSettings for `generate`
    action: Callable[[RunPool], Any] | None = None
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return max(len(self.items), 1)


@dataclass
class BatchStats:
    """What each forward batch held, for /metrics: (adapter, kind, texts) per batch."""

    observe: Callable[[str, str, int], None] = lambda adapter, kind, n: None


class Batcher:
    def __init__(self, pool: RunPool, max_batch: int = 32, max_wait: float = 0.005, stats: BatchStats | None = None):
        self.pool, self.max_batch, self.max_wait = pool, max_batch, max_wait
        self.stats = stats or BatchStats()
        self.queue: queue.Queue[Job | None] = queue.Queue()
        # The worker sees the command's opt-ins (--plugin, --trust-remote-code) when it loads a run.
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=ctx.run, args=(self._work,), name="adapterkit-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        self.queue.put(job)
        return job.future

    def stop(self) -> None:
        """Finish what is queued, then end the worker."""
        self.queue.put(None)
        self.thread.join()

    def _work(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch, size, stop = [first], first.size, False
            deadline = time.monotonic() + self.max_wait
            while first.kind != "call" and size < self.max_batch:
                try:
                    job = self.queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
                size += job.size
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[Job]) -> None:
        """Jobs of one adapter (and one kind and settings) as one forward; calls in their place in the queue, so an
        unload never overtakes a request that came before it."""
        groups: dict[tuple, list[Job]] = {}
        for job in batch:
            if job.kind == "call":
                self._flush(groups)
                _answer([job], self._call, job)
                continue
            key = (job.kind, job.adapter, job.settings.model_dump_json() if job.settings is not None else "")
            groups.setdefault(key, []).append(job)
        self._flush(groups)

    def _flush(self, groups: dict[tuple, list[Job]]) -> None:
        predict = [j for (kind, _, _), jobs in groups.items() if kind == "predict" for j in jobs]
        if predict:
            self._predict(predict)
        for (kind, adapter, _), jobs in groups.items():
            if kind == "generate":
                _answer(jobs, self._generate, adapter, jobs)
                self.stats.observe(adapter, kind, sum(len(j.items) for j in jobs))
        groups.clear()

    def _predict(self, jobs: list[Job]) -> None:
        """Every prediction request of the batch in one call: the pool runs the rows of runs that mix in one
        forward pass, each other run's rows in a pass of its own."""
        gone = [j for j in jobs if j.adapter not in self.pool.runs]  # unloaded while it waited
        for j in gone:
            _answer([j], self._refuse, j.adapter)
        jobs = [j for j in jobs if j not in gone]
        if not jobs:
            return
        pairs = [(j.adapter, x) for j in jobs for x in j.items]
        _answer(jobs, lambda: _split(jobs, self.pool.predict_rows(pairs)))
        counts: dict[str, int] = {}
        for name, _ in pairs:
            counts[name] = counts.get(name, 0) + 1
        for name, n in counts.items():
            self.stats.observe(name, "predict", n)
        self.stats.observe("", "predict", len(pairs))

    def _generate(self, adapter: str, jobs: list[Job]) -> list:
        run = self.pool.get(adapter)
        items = [x for j in jobs for x in j.items]
        ids = [
            prompt_ids(run.recipe, run.tokenizer, x) if isinstance(x, str) else chat_ids(run.recipe, run.tokenizer, x)
            for x in items
        ]
        texts = generate_batch(run.model, run.tokenizer, ids, jobs[0].settings)
        return _split(jobs, [{"text": t, "prompt_tokens": len(i)} for t, i in zip(texts, ids)])

    def _refuse(self, adapter: str) -> list:
        self.pool.get(adapter)  # raises the pool's one-line refusal
        return []

    def _call(self, job: Job) -> list:
        assert job.action is not None
        return [job.action(self.pool)]


def _split(jobs: list[Job], rows: list) -> list[list]:
    """Each job's share of the rows computed for all of them, in order."""
    out, at = [], 0
    for j in jobs:
        out.append(rows[at : at + len(j.items)])
        at += len(j.items)
    return out


def _answer(jobs: list[Job], compute: Callable[..., list], *args) -> None:
    try:
        results = compute(*args)
    except Exception as e:  # handed to the request that asked; the worker goes on
        for j in jobs:
            j.future.set_exception(e)
        return
    for j, r in zip(jobs, results):
        j.future.set_result(r)
