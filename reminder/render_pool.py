"""Rendering claimed messages, in worker processes when a chunk is big enough.

On a machine with more than one CPU, chunks of messages are rendered and built in
worker processes, so that the process that talks SMTP spends its time on the wire.

- Workers start from a clean process (forkserver), never from one holding database
  connections or a running event loop.
- Workers ignore SIGINT: Ctrl-C on a terminal reaches the whole process group, and the
  daemon, not each worker, decides what stops (it stops them as it exits).
- A run's first chunk is rendered in the sending process once the batch's other chunks
  went to the workers: its messages go out while a worker starts or renders. After that,
  the sending process takes a chunk itself whenever every worker holds one and it holds
  none: on two CPUs a single worker would otherwise render nearly everything while the
  sending process waits.
- What is rendered in the sending process is rendered one chunk at a time, and yields
  to the event loop every ``SLICE_S``, so that the sessions on the wire are fed while a
  chunk renders (several chunks sliced side by side would hold the loop for a slice
  each, in one turn of the loop). The templates it needs are compiled first, in a
  thread: a compile takes tens of ms.
- Workers die with the sending process, whatever ends it: each watches it (a pidfd), so
  that a kill -9 of a session leaves no worker behind; multiprocessing's forkserver and
  resource tracker then see their pipes close and exit too.
- A worker that dies (killed, out of memory) breaks the pool: the chunk it held, and
  the rest of that run, are rendered in the sending process.
- The workers exist only while there is a backlog: the pool starts when a chunk goes
  to a worker (never for a run of one chunk, which is rendered here), and ``close``
  after the run stops the workers, the forkserver and multiprocessing's resource
  tracker, so that an idle daemon is one process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from reminder.channels import Claimed, Outgoing, Result
from reminder.contacts import Contacts
from reminder.logs import get_logger
from reminder.prepare import Preparer, render_chunk, start_worker
from reminder.render import Renderer
from reminder.settings import Settings

CHUNK = 200  # messages rendered (and handed to a sender) together
SLICE_S = 0.005  # rendering in the sending process holds the event loop at most ~this long


def start_quiet_worker(
    settings: Settings, contacts: Contacts, templates: Mapping[str, str] | None, sender: int
) -> None:
    """A worker process's initializer: SIGINT ignored, and it dies with ``sender`` (see
    the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with(sender)
    start_worker(settings, contacts, templates)


def die_with(pid: int) -> None:
    """Exit this process once process ``pid`` has ended, however it ended (kill -9
    included): a thread waits on a pidfd of it (Linux 5.3 and later; elsewhere the
    pool's own shutdown only)."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return

    def wait() -> None:
        select.select([handle], [], [])  # readable once the process has ended
        os._exit(0)

    threading.Thread(target=wait, name="die-with-sender", daemon=True).start()


class RenderPool:
    """Renders chunks of claimed messages, here or in worker processes."""

    def __init__(self, settings: Settings, contacts: Contacts, renderer: Renderer) -> None:
        self.settings = settings
        self.contacts = contacts
        self.preparer = Preparer(settings, contacts, renderer)
        self.templates = renderer.sources  # what the workers render: the same snapshot
        self._pool: ProcessPoolExecutor | None = None
        self._failed = False  # for the rest of a run, work in this process
        self._first_here = False  # the next chunk is rendered in this process
        self._here_lock: asyncio.Lock | None = None  # made in the loop that renders
        self._loaded: set[tuple[str, str]] = set()  # (kind, channel): compiled here
        self._at_workers = 0  # chunks sent to the workers, not yet back
        self._here_queued = 0  # chunks this process took to render itself
        self.log = get_logger()

    def begin_run(self) -> None:
        self._failed = False
        self._first_here = True
        self._here_lock = None  # a run's loop may be a new one (each `asyncio.run`)

    def _workers(self) -> ProcessPoolExecutor | None:
        workers = self.settings.delivery.workers
        if workers == 0 or self._failed:
            return None
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["reminder.prepare", "reminder.render_pool"])
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=context,
                initializer=start_quiet_worker,
                initargs=(self.settings, self.contacts, self.templates, os.getpid()),
            )
        return self._pool

    @property
    def running(self) -> bool:
        """Whether worker processes (or the pool that starts them) exist."""
        return self._pool is not None

    async def prepare(self, rows: Sequence[Claimed], now: dt.datetime) -> list[Outgoing | Result]:
        """Each row rendered and built (``Outgoing``), or a ``Result`` if it cannot be."""
        if len(rows) < CHUNK // 2:
            return await self._here(rows, now)
        if self._first_here:
            # before the pool is made: a run of one chunk starts no process
            self._first_here = False
            return await self._here_too(rows, now, first=True)
        pool = self._workers()
        if pool is None:
            return await self._here(rows, now)
        if self._here_queued == 0 and self._at_workers >= self.settings.delivery.workers:
            # this process renders too, one chunk at a time, while the workers are busy
            return await self._here_too(rows, now)
        loop = asyncio.get_running_loop()
        self._at_workers += 1
        try:
            return await loop.run_in_executor(pool, render_chunk, rows, now)
        except BrokenProcessPool as exc:
            # nothing of this chunk was sent yet, so it is rendered here
            self.log.error("render_workers_failed", error=str(exc))
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            self._failed = True
            return await self._here(rows, now)
        finally:
            self._at_workers -= 1

    async def _here_too(
        self, rows: Sequence[Claimed], now: dt.datetime, *, first: bool = False
    ) -> list[Outgoing | Result]:
        """A chunk rendered here beside the workers (``first``: the batch's other
        chunks go to the workers before it)."""
        self._here_queued += 1
        try:
            if first:
                await asyncio.sleep(0)
            return await self._here(rows, now)
        finally:
            self._here_queued -= 1

    async def _here(self, rows: Sequence[Claimed], now: dt.datetime) -> list[Outgoing | Result]:
        """Rendered in this process, one chunk at a time, a slice of ~SLICE_S at a time."""
        if self._here_lock is None:
            self._here_lock = asyncio.Lock()
        out: list[Outgoing | Result] = []
        async with self._here_lock:
            needed = {(row.kind, row.channel) for row in rows} - self._loaded
            if needed:
                await asyncio.to_thread(self.preparer.load, needed)
                self._loaded |= needed
            begun = time.perf_counter()
            for row in rows:
                out.extend(self.preparer.chunk((row,), now))
                if time.perf_counter() - begun >= SLICE_S:
                    await asyncio.sleep(0)
                    begun = time.perf_counter()
        return out

    def close(self) -> None:
        """Stop the workers once they finished what they hold, then the forkserver and
        the resource tracker (blocks while a worker finishes: call it in a thread)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=True, cancel_futures=True)
        del pool
        stop_helpers()

    def kill(self) -> None:
        """Stop the workers now, whatever they hold (a stop that ran out of time)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # the processes before shutdown() forgets them; Python 3.14 has terminate_workers()
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()


def stop_helpers() -> None:
    """Stop multiprocessing's forkserver and resource tracker, which outlive the pool
    that started them (~25 MiB each, idle), once no worker is left.

    The stdlib has no public way to do this: both have a ``_stop()`` (there since 3.8,
    for the stdlib's own tests), used here if present. The pool's queues are collected
    first so that their semaphores are unregistered: the tracker, once stopped, would
    otherwise unlink them and warn of a leak. Both start again with the next pool.
    """
    gc.collect()  # the pool's queues and their semaphores
    from multiprocessing import forkserver, resource_tracker  # noqa: PLC0415 - loaded with the pool

    for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()
