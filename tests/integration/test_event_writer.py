"""EventWriter: batching, flushing, spilling, replaying, and never losing or duplicating an event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from antidistill.errors import ConfigError, StoreError
from antidistill.settings import EventSettings
from antidistill.store import Event, EventWriter, RejectedDataError, SqlStore
from antidistill.store.codec import event_to_line
from antidistill.store.spill import REJECTED_NAME
from tests.conftest_store import fresh_store, make_event


class WrappedStore:
    """A real store whose inserts can fail, hang, or fail after committing; records batch sizes."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.failing = False
        self.fail_after_commit = False
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set once an insert has started
        self.reject_ids: set[str] = set()
        self.batches: list[int] = []

    def insert_events(self, events: Sequence[Event]) -> int:
        self.entered.set()
        self.gate.wait()
        if self.failing:
            raise StoreError("simulated outage")
        if any(e.id in self.reject_ids for e in events):
            raise RejectedDataError("simulated bad row")
        added = self.inner.insert_events(events)
        self.batches.append(len(events))
        if self.fail_after_commit:
            raise StoreError("connection lost after commit")
        return added

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with fresh_store("sqlite", tmp_path) as s:
        yield s


@pytest.fixture
def wrapped(store: SqlStore) -> WrappedStore:
    return WrappedStore(store)


def settings(tmp_path: Path, **kw: Any) -> EventSettings:
    values: dict[str, Any] = {"batch_size": 50, "flush_interval_ms": 20, "queue_max": 10_000}
    values.update(kw)
    return EventSettings(spill_dir=str(tmp_path / "spill"), **values)


def writer_for(store: Any, tmp_path: Path, **kw: Any) -> EventWriter:
    extra = {k: kw.pop(k) for k in ("replay_interval_s", "max_backoff_s") if k in kw}
    return EventWriter(store, settings(tmp_path, **kw), **extra)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def spill_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spill").glob("spill-*.jsonl"))


def spilled_lines(tmp_path: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in spill_files(tmp_path))


def replay_all(store: Any, tmp_path: Path) -> EventWriter:
    """Start a fresh writer (replaying every spill file) and close it."""
    w = writer_for(store, tmp_path)
    w.start()
    assert w.startup_replay_done.wait(10)
    w.close()
    return w


# batching and flushing ---------------------------------------------------------------------
def test_batches_are_at_most_batch_size(wrapped: WrappedStore, tmp_path: Path) -> None:
    w = writer_for(wrapped, tmp_path, batch_size=50, flush_interval_ms=5000)
    for i in range(500):
        w.submit(make_event(i))  # queued before start: the writer finds full batches
    w.start()
    wait_for(lambda: wrapped.inner.count_events() == 500)
    w.close()
    assert wrapped.batches == [50] * 10
    assert (w.events_submitted, w.events_written, w.events_spilled) == (500, 500, 0)


def test_flush_interval_bounds_the_wait_of_a_lone_event(store: SqlStore, tmp_path: Path) -> None:
    w = writer_for(store, tmp_path, batch_size=1000, flush_interval_ms=50)
    w.start()
    start = time.monotonic()
    for i in range(5):
        w.submit(make_event(i))
    wait_for(lambda: store.count_events() == 5, timeout=5)
    assert time.monotonic() - start < 1.0
    w.close()


def test_close_writes_everything_queued(store: SqlStore, tmp_path: Path) -> None:
    w = writer_for(store, tmp_path, batch_size=1000, flush_interval_ms=60_000)
    w.start()
    for i in range(123):
        w.submit(make_event(i))
    start = time.monotonic()
    w.close()
    assert time.monotonic() - start < 3
    assert store.count_events() == 123 and w.events_written == 123
    w.close()  # idempotent


def test_flush_waits_for_events_submitted_before(store: SqlStore, tmp_path: Path) -> None:
    w = writer_for(store, tmp_path, batch_size=1000, flush_interval_ms=60_000)
    w.start()
    for i in range(42):
        w.submit(make_event(i))
    assert w.flush(timeout=5)
    assert store.count_events() == 42
    w.close()
    assert w.flush() is True  # closed: nothing pending


# spilling and replaying --------------------------------------------------------------------
def test_failed_writes_spill_and_replay_on_next_start(wrapped: WrappedStore, tmp_path: Path) -> None:
    wrapped.failing = True
    w = writer_for(wrapped, tmp_path, batch_size=20)
    w.start()
    for i in range(100):
        w.submit(make_event(i))
    w.close()
    assert wrapped.inner.count_events() == 0
    assert w.events_spilled == 100 and w.write_errors >= 1 and w.events_written == 0
    assert spilled_lines(tmp_path) == 100

    wrapped.failing = False
    again = replay_all(wrapped, tmp_path)
    assert again.events_replayed == 100
    assert wrapped.inner.count_events() == 100
    assert spill_files(tmp_path) == []
    assert [e.id for e in wrapped.inner.iter_events()] == [make_event(i).id for i in range(100)]


def test_replay_of_already_committed_events_adds_no_duplicates(wrapped: WrappedStore, tmp_path: Path) -> None:
    wrapped.fail_after_commit = True  # rows are in, but the writer sees an error and spills them
    w = writer_for(wrapped, tmp_path, batch_size=20)
    for i in range(60):
        w.submit(make_event(i))
    w.start()
    w.close()
    # the first batch committed, then the writer backed off and spilled the rest without trying
    assert wrapped.inner.count_events() == 20 and w.events_spilled == 60

    wrapped.fail_after_commit = False
    replay_all(wrapped, tmp_path)
    ids = [e.id for e in wrapped.inner.iter_events()]
    assert len(ids) == len(set(ids)) == 60
    assert spill_files(tmp_path) == []


def test_recovers_and_replays_while_running(wrapped: WrappedStore, tmp_path: Path) -> None:
    wrapped.failing = True
    w = writer_for(wrapped, tmp_path, batch_size=10, max_backoff_s=0.1, replay_interval_s=0.2)
    w.start()
    for i in range(30):
        w.submit(make_event(i))
    wait_for(lambda: w.events_spilled == 30)
    wrapped.failing = False
    w.submit(make_event(30))
    wait_for(lambda: wrapped.inner.count_events() == 31)  # no restart needed
    w.close()
    assert spill_files(tmp_path) == []


def test_full_queue_spills_without_blocking_the_caller(wrapped: WrappedStore, tmp_path: Path) -> None:
    wrapped.gate.clear()  # the store hangs: the writer is stuck in its first insert
    w = writer_for(wrapped, tmp_path, batch_size=5, queue_max=10)
    w.start()
    w.submit(make_event(0))
    assert wrapped.entered.wait(5)  # the writer holds event 0 in its stuck batch
    start = time.monotonic()
    for i in range(1, 200):
        w.submit(make_event(i))
    assert time.monotonic() - start < 1.0
    assert w.events_spilled == 199 - 10  # all but what fits in the queue
    wrapped.gate.set()
    w.close()
    assert wrapped.inner.count_events() + spilled_lines(tmp_path) == 200
    replay_all(wrapped, tmp_path)
    assert wrapped.inner.count_events() == 200


def test_close_with_a_hanging_store_spills_everything(wrapped: WrappedStore, tmp_path: Path) -> None:
    wrapped.gate.clear()
    w = writer_for(wrapped, tmp_path, batch_size=10)
    w.start()
    for i in range(50):
        w.submit(make_event(i))
    assert wrapped.entered.wait(5)
    start = time.monotonic()
    w.close(timeout=0.3)
    assert time.monotonic() - start < 2
    assert spilled_lines(tmp_path) == 50  # the stuck batch too
    w.submit(make_event(50))  # after close: straight to the spill file
    assert spilled_lines(tmp_path) == 51
    wrapped.gate.set()  # the stuck insert completes late: replay must not duplicate it
    replay_all(wrapped, tmp_path)
    assert wrapped.inner.count_events() == 51


def test_a_live_writers_spill_file_is_not_taken_by_another(wrapped: WrappedStore, tmp_path: Path) -> None:
    wrapped.failing = True
    a = writer_for(wrapped, tmp_path, batch_size=10)
    a.start()
    for i in range(20):
        a.submit(make_event(i))
    wait_for(lambda: a.events_spilled == 20)
    other = WrappedStore(wrapped.inner)
    b = replay_all(other, tmp_path)  # a second process/worker sharing the spill dir
    assert b.events_replayed == 0 and wrapped.inner.count_events() == 0
    a.close()  # releases its file
    wrapped.failing = False
    replay_all(wrapped, tmp_path)
    assert wrapped.inner.count_events() == 20


# bad data ----------------------------------------------------------------------------------
def test_a_row_refused_as_data_is_set_aside_and_the_rest_written(
    wrapped: WrappedStore, tmp_path: Path
) -> None:
    wrapped.reject_ids = {make_event(7).id}
    w = writer_for(wrapped, tmp_path, batch_size=10)
    w.start()
    for i in range(10):
        w.submit(make_event(i))
    w.close()
    assert wrapped.inner.count_events() == 9 and w.events_rejected == 1 and w.events_written == 9
    [record] = [json.loads(x) for x in (tmp_path / "spill" / REJECTED_NAME).read_text().splitlines()]
    assert record["event"]["id"] == make_event(7).id and "simulated bad row" in record["reason"]
    assert spill_files(tmp_path) == []  # not retried forever


def test_torn_spill_line_is_set_aside_on_replay(store: SqlStore, tmp_path: Path) -> None:
    (tmp_path / "spill").mkdir()
    lines = b"".join(event_to_line(make_event(i)) for i in range(3))
    (tmp_path / "spill" / "spill-00000000000000000001-1-0.jsonl").write_bytes(lines + b'{"id": "ev-0000')
    replay_all(store, tmp_path)
    assert store.count_events() == 3
    assert "ev-0000" in (tmp_path / "spill" / REJECTED_NAME).read_text()
    assert spill_files(tmp_path) == []


def test_submit_never_raises(store: SqlStore, tmp_path: Path) -> None:
    w = writer_for(store, tmp_path)
    w.start()
    w.submit("not an event")  # type: ignore[arg-type]
    w.submit(make_event(1, request={"weird": object(), "nan": float("nan")}))
    w.close()
    assert w.events_rejected == 1 and store.count_events() == 1


def test_unusable_spill_dir_fails_at_start(store: SqlStore, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    w = EventWriter(store, EventSettings(spill_dir=str(tmp_path / "file" / "spill")))
    with pytest.raises(ConfigError, match="spill_dir"):
        w.start()


# concurrency -------------------------------------------------------------------------------
@pytest.mark.parametrize("queue_max", [100_000, 50])
def test_concurrent_producers_exactly_once(store: SqlStore, tmp_path: Path, queue_max: int) -> None:
    w = writer_for(store, tmp_path, batch_size=256, flush_interval_ms=20, queue_max=queue_max)
    w.start()
    n_threads, per_thread = 8, 1250

    def produce(t: int) -> None:
        for j in range(per_thread):
            w.submit(make_event(t * per_thread + j))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    w.close()
    assert w.events_submitted == 10_000
    assert w.events_written + w.events_spilled == 10_000
    replay_all(store, tmp_path)  # a tiny queue spills some: the next start brings them in
    assert store.count_events() == 10_000
    assert len({e.id for e in store.iter_events(batch=5000)}) == 10_000


# hard crash --------------------------------------------------------------------------------
_CHILD = """
import sys, time
from antidistill.settings import EventSettings
from antidistill.store import EventWriter, SqlStore
from tests.conftest_store import make_event
store = SqlStore(sys.argv[1])
store.migrate()
cfg = EventSettings(batch_size=256, flush_interval_ms=int(sys.argv[4]), spill_dir=sys.argv[2])
w = EventWriter(store, cfg)
w.start()
i, t0, rate = 0, time.monotonic(), float(sys.argv[3])
while True:
    for _ in range(10):
        w.submit(make_event(i))
        i += 1
    print(i, flush=True)
    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
"""


def test_sigkill_loses_at_most_the_queue(store: SqlStore, tmp_path: Path) -> None:
    """SIGKILL a process submitting 2,000 events/s: what is lost is the in-memory queue only."""
    rate, interval_s, batch = 2000.0, 0.05, 256
    db_url = f"sqlite:///{tmp_path / 'db' / 'store.db'}"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            db_url,
            str(tmp_path / "spill"),
            str(rate),
            str(int(interval_s * 1000)),
        ],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert child.stdout is not None
    submitted = 0
    try:
        for line in child.stdout:
            submitted = int(line)
            if submitted >= 3000:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    replay_all(store, tmp_path)  # anything spilled survives the kill
    rows = store.count_events()
    lost = submitted - rows  # the child may have submitted <10 more than it printed
    print(f"SIGKILL at {rate:.0f} events/s, {interval_s * 1000:.0f} ms interval: {lost} events lost")
    assert child.returncode == -signal.SIGKILL
    assert lost <= rate * (interval_s + 0.25) + batch  # one flush interval of traffic + a batch + slack
