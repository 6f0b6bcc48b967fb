"""Spill files: events the store could not take yet, kept on disk as JSON lines until replayed.

Layout of ``spill_dir``:

- ``spill-<ns>-<pid>-<seq>.jsonl``: one event per line. A writer owns its current file through an
  exclusive ``flock`` held while the file is open, so several processes (gateway workers, replicas
  on one host) can share the directory: a replayer only takes files it can lock, i.e. closed files
  or files of dead processes (the kernel drops a dead process's locks). A file is created under a
  ``.new`` name, locked, then renamed, so no one can claim it between creation and locking.
- ``rejected.jsonl``: events the database refused as data (and torn/foreign lines), with the reason.
  Never replayed automatically (they would fail again); kept for an operator, never deleted.

Replayed files are deleted only after every line is in the store. A replay interrupted half-way
leaves the file; the next replay inserts it again and duplicates are skipped by event id.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from antidistill.store.base import Event
from antidistill.store.codec import event_to_line, line_to_event

log = logging.getLogger(__name__)

SPILL_GLOB = "spill-*.jsonl"
REJECTED_NAME = "rejected.jsonl"


def _fsync_dir(directory: Path) -> None:
    """Make a created/renamed/deleted entry durable (the file's own fsync does not cover it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpillLog:
    """The spill directory of one process. Thread-safe; every method may raise OSError."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory).expanduser()
        self._lock = threading.Lock()
        self._reject_lock = threading.Lock()
        self._fh: BinaryIO | None = None
        self._dirty = False
        self._seq = itertools.count()

    # appending -----------------------------------------------------------------------------
    def append(self, events: Sequence[Event], *, sync: bool) -> None:
        """Append ``events``. ``sync=True`` fsyncs before returning; otherwise the lines are in the
        kernel's page cache (they survive a process kill, not a power cut) until :meth:`sync`."""
        data = b"".join(event_to_line(e) for e in events)
        with self._lock:
            fh = self._current()
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
            self._dirty = not sync

    def sync(self) -> None:
        """fsync what ``append(sync=False)`` wrote (cheap when nothing did)."""
        with self._lock:
            if self._dirty and self._fh is not None:
                os.fsync(self._fh.fileno())
                self._dirty = False

    def rotate(self) -> None:
        """Close the current file (fsynced), releasing its lock so that it can be replayed."""
        with self._lock:
            if self._fh is not None:
                if self._dirty:
                    os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh, self._dirty = None, False

    close = rotate

    @property
    def has_open_file(self) -> bool:
        return self._fh is not None

    def _current(self) -> BinaryIO:
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            name = f"spill-{time.time_ns():020d}-{os.getpid()}-{next(self._seq)}"
            tmp = self.dir / f"{name}.jsonl.new"
            fh = open(tmp, "xb")  # noqa: SIM115 (kept open across calls; closed by rotate)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(tmp, self.dir / f"{name}.jsonl")
            _fsync_dir(self.dir)
            self._fh = fh
        return self._fh

    # rejected rows -------------------------------------------------------------------------
    def reject(self, events: Iterable[Event] = (), lines: Iterable[bytes] = (), *, reason: str) -> int:
        """Set aside events/raw lines that can never be inserted; returns how many were written."""
        records = [{"reason": reason, "event": json.loads(event_to_line(e))} for e in events]
        records += [{"reason": reason, "raw": raw.decode("utf-8", "replace").rstrip("\n")} for raw in lines]
        if not records:
            return 0
        data = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records).encode("ascii")
        with self._reject_lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / REJECTED_NAME, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        return len(records)

    # replaying -----------------------------------------------------------------------------
    def pending(self) -> list[Path]:
        """Spill files present now, oldest first (including ones owned by live writers)."""
        return sorted(self.dir.glob(SPILL_GLOB)) if self.dir.is_dir() else []

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[ClaimedFile | None]:
        """Lock ``path`` for replay; yields None if a live writer owns it or it is already gone."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 (closed below; the lock lives as long as the file)
        except FileNotFoundError:
            yield None
            return
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            try:  # replayed and deleted by another process between our open and our lock?
                same = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            yield ClaimedFile(path, fh, self) if same else None


class ClaimedFile:
    """A spill file locked by this process for replay."""

    def __init__(self, path: Path, fh: BinaryIO, log_: SpillLog) -> None:
        self.path = path
        self._fh = fh
        self._log = log_
        self.bad_lines = 0

    def chunks(self, size: int) -> Iterator[list[Event]]:
        """Its events in chunks of ``size``; torn or foreign lines go to the rejected file."""
        chunk: list[Event] = []
        for line in self._fh:
            if not line.strip():
                continue
            try:
                chunk.append(line_to_event(line))
            except (ValueError, TypeError) as e:  # a line torn by a crash mid-write, or not ours
                self.bad_lines += self._log.reject(lines=[line], reason=f"unreadable spill line: {e}")
                log.warning("spill file %s: unreadable line set aside (%s)", self.path.name, e)
                continue
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def done(self) -> None:
        """Delete the file: every event in it is in the store now."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        _fsync_dir(self.path.parent)
