"""``EventWriter``: the gateway's events reach the store in batches, off the hot path, never dropped.

``submit(event)`` (hot path) is O(1) and never blocks or raises: it puts the event on a bounded
in-memory queue. One background thread takes up to ``batch_size`` events, waiting at most
``flush_interval_ms`` after the first one, and inserts them in one transaction.

Where an event can be, and what survives what:

1. In the queue (at most ``queue_max``) or in the batch being inserted (at most ``batch_size``).
   **This is all a hard crash (SIGKILL, OOM kill, power cut) can lose.** With a healthy store the
   writer keeps up, so the queue is nearly empty and the loss is the batch being collected
   (``min(rate x flush_interval, batch_size)``) plus what arrived during the commit in flight.
   Measured with ``tests/integration/test_event_writer.py::test_sigkill_loses_at_most_the_queue``
   (a child process submitting at a steady rate into SQLite, killed with SIGKILL at a random
   moment): 500 ev/s, 200 ms interval: 20-100 events lost (<= 200 ms of traffic); 2,000 ev/s,
   50 ms: 40-240; 2,000 ev/s, 200 ms, batch 256: 106-292 (about one batch). When the store is
   slow or down, the writer backs off and spills whole batches at once, so the queue stays short;
   the hard bound in every case is ``queue_max + batch_size``.
2. In the store: committed, durable (SQLite ``synchronous=FULL`` in WAL mode, Postgres commit).
3. In a spill file (store/spill.py) when the store write failed (down, locked, timeout) or the queue
   was full. The writer fsyncs each spilled batch before moving on. Events spilled by ``submit``
   itself (queue full) are written to the kernel at once (safe from a process kill) and fsynced by
   the writer thread within one loop (<= ``flush_interval_ms``; safe from a power cut after that).
   Spill files are replayed at ``start()`` (in the background, live events interleaved), after the
   store comes back, and every ``replay_interval_s``; duplicates are skipped by event id.
4. In ``spill_dir/rejected.jsonl`` when the database refuses the row as data (RejectedDataError):
   retrying would fail forever, so it is set aside for an operator instead of blocking the log.

Only if the store *and* the spill directory both fail is an event lost; ``events_lost`` counts it.
The counters (plain int attributes, read by the metrics collector) are ``events_submitted``,
``events_written``, ``events_spilled``, ``events_replayed``, ``events_rejected``, ``events_lost`` and
``write_errors``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from types import TracebackType

from antidistill.errors import ConfigError
from antidistill.settings import EventSettings
from antidistill.store.base import Event, RejectedDataError, Store
from antidistill.store.spill import SpillLog

log = logging.getLogger(__name__)


class _FlushMarker:
    """Put on the queue by ``flush()``; set once everything queued before it is handled."""

    def __init__(self) -> None:
        self.done = threading.Event()


_WAKE = object()  # put on the queue by close() to wake an idle writer at once
_Item = Event | _FlushMarker | object


class EventWriter:
    """Batches events into ``store``; see the module docstring for the durability contract."""

    def __init__(
        self,
        store: Store,
        settings: EventSettings | None = None,
        *,
        replay_interval_s: float = 30.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        cfg = settings or EventSettings()
        self._store = store
        self._batch_size = cfg.batch_size
        self._interval = cfg.flush_interval_ms / 1000.0
        self._idle_wait = min(max(self._interval, 0.01), 0.5)
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=cfg.queue_max)
        self.spill = SpillLog(cfg.spill_dir)
        self._replay_interval = replay_interval_s
        self._max_backoff = max_backoff_s
        self._stats_lock = threading.Lock()
        self.events_submitted = 0
        self.events_written = 0
        self.events_spilled = 0
        self.events_replayed = 0
        self.events_rejected = 0
        self.events_lost = 0
        self.write_errors = 0
        self.startup_replay_done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False  # no new events go to the queue
        self._finished = False  # close() has drained the queue for the last time
        self._backoff = 0.0
        self._down_until = 0.0
        self._last_replay = time.monotonic()
        self._replay_due = False
        self._inflight: list[Event] = []

    # public API ----------------------------------------------------------------------------
    def submit(self, event: Event) -> None:
        """Hand one event over (hot path: O(1), non-blocking, never raises)."""
        try:
            if not isinstance(event, Event):
                log.error("event writer: ignoring a %s that is not an Event", type(event).__name__)
                self._add("events_rejected", 1)
                return
            self._add("events_submitted", 1)
            if self._closed:
                self._spill([event], sync=True)
                return
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self._spill([event], sync=False)  # a write() to the page cache; fsync by the writer
                return
            if self._finished:  # raced with close(): it may have drained the queue already
                self._drain_to_spill()
        except Exception:
            log.exception("event writer: submit failed")

    def start(self) -> None:
        """Start the writer thread; it first replays spill files left by earlier runs.
        ConfigError if the spill directory cannot be created or written (fail at start-up, not
        in the middle of an outage)."""
        if self._thread is not None or self._closed:
            return
        try:
            self.spill.dir.mkdir(parents=True, exist_ok=True)
            writable = os.access(self.spill.dir, os.W_OK | os.X_OK)
        except OSError as e:
            raise ConfigError(f"events.spill_dir {self.spill.dir} cannot be created: {e}") from e
        if not writable:
            raise ConfigError(f"events.spill_dir {self.spill.dir} is not writable")
        self._thread = threading.Thread(target=self._run, name="antidistill-event-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event submitted before this call is written (or spilled).
        False on timeout or when the writer is not running."""
        if self._thread is None or not self._thread.is_alive():
            return self._finished
        marker = _FlushMarker()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Graceful shutdown: write what is queued; whatever cannot be written in ``timeout`` seconds
        (store down or hanging) goes to the spill file. Idempotent."""
        if self._finished:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(queue.Full):  # when full, the writer is busy and sees the flag anyway
            self._queue.put_nowait(_WAKE)
        thread = self._thread
        if thread is None:
            self._drain_and_write()  # never started: write inline
        else:
            thread.join(timeout)
            if thread.is_alive():
                log.error("event writer: not finished after %.1fs; spilling what is left", timeout)
                self._spill(list(self._inflight), sync=True)  # may duplicate rows: skipped by id
        self._drain_to_spill()
        self._finished = True
        self._drain_to_spill()
        try:
            self.spill.close()
        except OSError:
            log.exception("event writer: closing the spill file failed")

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def __enter__(self) -> EventWriter:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._replay()
        finally:
            self.startup_replay_done.set()
        try:
            while True:
                stopping = self._stop.is_set()
                batch, markers = self._collect(stopping)
                self._handle(batch, markers)
                self._sync_spill()
                if stopping and self._queue.empty():
                    return
                if not stopping:
                    self._maybe_replay()
        except Exception:  # a bug; close() spills what is left in the queue
            log.exception("event writer: thread crashed")

    def _collect(self, stopping: bool) -> tuple[list[Event], list[_FlushMarker]]:
        """Up to ``batch_size`` events, waiting at most one flush interval after the first."""
        items: list[Event] = []
        markers: list[_FlushMarker] = []
        deadline: float | None = None
        while len(items) < self._batch_size:
            try:
                if stopping:
                    item = self._queue.get_nowait()
                elif deadline is None:
                    item = self._queue.get(timeout=self._idle_wait)
                else:
                    remaining = deadline - time.monotonic()
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Event):
                items.append(item)
                if deadline is None:
                    deadline = time.monotonic() + self._interval
            elif isinstance(item, _FlushMarker):
                markers.append(item)
                break
            else:  # _WAKE
                stopping = stopping or self._stop.is_set()
        return items, markers

    def _handle(self, batch: list[Event], markers: list[_FlushMarker]) -> None:
        if batch:
            self._write(batch)
        for marker in markers:
            marker.done.set()

    def _write(self, batch: list[Event]) -> None:
        """Insert one live batch, or spill it (store failing, or in back-off after a failure)."""
        self._inflight = batch
        try:
            if time.monotonic() < self._down_until:
                self._spill(batch, sync=True)
                return
            try:
                rejected = self._insert(batch)
            except Exception as e:
                self._failed(e)
                self._spill(batch, sync=True)
                return
            self._succeeded()
            self._add("events_written", len(batch) - rejected)
        finally:
            self._inflight = []

    def _insert(self, batch: list[Event]) -> int:
        """Insert; rows refused as data are set aside one by one. Returns how many were set aside.
        Raises when the store is unavailable."""
        try:
            self._store.insert_events(batch)
            return 0
        except RejectedDataError as e:
            if len(batch) == 1:
                self._reject(batch, e)
                return 1
        rejected = 0
        for event in batch:  # find the bad rows; the others go in
            try:
                self._store.insert_events([event])
            except RejectedDataError as e:
                self._reject([event], e)
                rejected += 1
        return rejected

    def _failed(self, error: Exception) -> None:
        self._add("write_errors", 1)
        self._backoff = min(max(self._backoff * 2, 0.5), self._max_backoff)
        self._down_until = time.monotonic() + self._backoff
        log.warning(
            "event writer: store write failed (%s); spilling to %s, next try in %.1fs",
            error,
            self.spill.dir,
            self._backoff,
        )

    def _succeeded(self) -> None:
        if self._backoff:
            log.info("event writer: store reachable again; replaying spilled events")
            self._replay_due = True
        self._backoff = 0.0

    # spilling and replaying ----------------------------------------------------------------
    def _spill(self, events: list[Event], *, sync: bool) -> None:
        if not events:
            return
        try:
            self.spill.append(events, sync=sync)
            self._add("events_spilled", len(events))
            if self._finished:  # after close(): release the file at once so it can be replayed
                self.spill.rotate()
        except Exception:
            log.critical(
                "event writer: %d events LOST: store and spill dir %s both fail",
                len(events),
                self.spill.dir,
                exc_info=True,
            )
            self._add("events_lost", len(events))

    def _reject(self, events: list[Event], error: Exception) -> None:
        log.error("event writer: %d events refused by the store as data: %s", len(events), error)
        try:
            self._add("events_rejected", self.spill.reject(events, reason=str(error)))
        except OSError:
            log.exception("event writer: cannot set aside rejected events")
            self._add("events_lost", len(events))

    def _sync_spill(self) -> None:
        try:
            self.spill.sync()
        except OSError:
            log.exception("event writer: fsync of the spill file failed")

    def _maybe_replay(self) -> None:
        now = time.monotonic()
        if now >= self._down_until and (self._replay_due or now - self._last_replay >= self._replay_interval):
            self._replay()

    def _replay(self) -> None:
        """Move spill files into the store, oldest first; live events are written between chunks.
        Never raises (a failing replay leaves its files for the next one)."""
        self._last_replay, self._replay_due = time.monotonic(), False
        try:
            self._replay_files()
        except Exception:
            log.exception("event writer: replay of spill files failed")

    def _replay_files(self) -> None:
        try:
            self.spill.rotate()  # our own current file becomes replayable
            paths = self.spill.pending()
        except OSError:
            log.exception("event writer: cannot read the spill dir %s", self.spill.dir)
            return
        errors_before = self.write_errors
        for path in paths:
            with self.spill.claim(path) as claimed:
                if claimed is None:
                    continue  # owned by a live writer, or gone
                try:
                    for chunk in claimed.chunks(self._batch_size):
                        self._add("events_replayed", len(chunk) - self._insert(chunk))
                        self._succeeded()
                        self._drain_live()
                        if self.write_errors != errors_before:  # a live write failed: store down again
                            return
                        if self._stop.is_set():  # closing: the rest waits for the next start
                            return
                    claimed.done()
                except Exception as e:
                    self._failed(e)
                    return
            log.info("event writer: replayed spill file %s", path.name)
        self._replay_due = False

    def _drain_live(self) -> None:
        """Write what is queued now (keeps live latency bounded during a long replay)."""
        for _ in range(1 + self._queue.qsize() // self._batch_size):
            batch, markers = self._collect(stopping=True)
            if not batch and not markers:
                return
            self._handle(batch, markers)

    def _drain_and_write(self) -> None:
        while True:
            batch, markers = self._collect(stopping=True)
            if not batch and not markers:
                return
            self._handle(batch, markers)

    def _drain_to_spill(self) -> None:
        """Spill everything still queued (after the writer thread stopped or hung)."""
        batch, markers = self._collect(stopping=True)
        while batch or markers:
            self._spill(batch, sync=True)
            for marker in markers:
                marker.done.set()
            batch, markers = self._collect(stopping=True)

    def _add(self, counter: str, n: int) -> None:
        with self._stats_lock:
            setattr(self, counter, getattr(self, counter) + n)
