"""The file channel: each message written under var/outbox/ instead of being sent.

The default on a fresh install (no SMTP host, no SMS gateway), and what `simulate`
writes into. E-mail is written as the .eml it would have been on the wire, SMS as .txt,
robot messages as .md. A file is written whole or not at all (a temporary file renamed
into place), and its name comes from the outbox key, so a repeat after a crash rewrites
the same file instead of adding a second one.

A message counts as sent only once its file is durable: its data fsynced, renamed into
place, and the folder fsynced (the rename is only durable then). An fsync can take
milliseconds on a real disk, so the files of one ``send`` are written in a worker
thread, never on the event loop, as a batch:

1. write every temporary file;
2. fsync them (several threads at once: the file system commits them together);
3. rename each into place;
4. fsync each folder touched, once;
5. only then report them sent, back on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reminder.channels import Outgoing, Report, Result, Window, always_open

_SUFFIX = {"email": ".eml", "sms": ".txt"}
SYNC_THREADS = 8  # fsyncs in flight together within one batch


def file_name(item: Outgoing) -> str:
    digest = hashlib.sha256(item.key.encode()).hexdigest()[:12]
    return f"{item.kind}-{digest}{_SUFFIX.get(item.channel, '.md')}"


def content(item: Outgoing) -> bytes:
    if item.channel == "email":
        return item.data
    head = f"To: {item.to} ({item.recipient_name})\nChannel: {item.channel}\n"
    if item.subject:
        head += f"Subject: {item.subject}\n"
    return (head + "\n" + item.body + "\n").encode()


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that the names renamed into it last a crash."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_temporary(path: Path, data: bytes) -> tuple[Path, int]:
    """The file's bytes under a temporary name; its descriptor stays open for the fsync."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    except BaseException:
        os.close(descriptor)
        _remove(temporary)
        raise
    return temporary, descriptor


def _remove(temporary: Path) -> None:
    with contextlib.suppress(OSError):
        temporary.unlink()


def _sync_or_error(descriptor: int) -> OSError | None:
    try:
        os.fsync(descriptor)
    except OSError as exc:
        return exc
    finally:
        os.close(descriptor)
    return None


class FileSender:
    """Files written and fsynced in batches off the event loop (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # batches of e-mail and SMS are written side by side

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="file-sync")
            return self._threads

    def write_batch(self, items: Sequence[Outgoing]) -> list[Path | OSError]:
        """Each item's file made durable (the module docstring's steps 1–4), or the error
        that stopped it. Blocking: call it from a worker thread."""
        outcomes: list[Path | OSError] = []
        started: list[tuple[int, Path, Path, int]] = []  # index, path, temporary, fd
        for index, item in enumerate(items):
            folder = self.folder / (item.scheduled_day or "undated")
            path = folder / file_name(item)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                temporary, descriptor = _write_temporary(path, content(item))
            except OSError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(path)
            started.append((index, path, temporary, descriptor))
        synced = self._pool().map(_sync_or_error, [fd for _, _, _, fd in started])
        folders: dict[Path, list[int]] = {}
        for (index, path, temporary, _), error in zip(started, synced, strict=True):
            try:
                if error is not None:
                    raise error
                os.replace(temporary, path)
            except OSError as exc:
                outcomes[index] = exc
                _remove(temporary)
                continue
            folders.setdefault(path.parent, []).append(index)
        for folder, indexes in folders.items():
            try:
                sync_folder(folder)
            except OSError as exc:
                for index in indexes:
                    outcomes[index] = exc
        return outcomes

    def write(self, item: Outgoing) -> Path:
        """One file made durable (blocking)."""
        outcome = self.write_batch([item])[0]
        if isinstance(outcome, OSError):
            raise outcome
        return outcome

    async def send(
        self, items: Sequence[Outgoing], report: Report, window: Window = always_open
    ) -> None:
        # once for the batch: a repeat after a crash rewrites the same files (named by
        # key), so a batch larger than the window repeats nothing a recipient sees
        await window()
        outcomes = await asyncio.to_thread(self.write_batch, items)
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, OSError):
                report(Result(item.id, "retry", None, f"cannot write: {outcome.strerror}"))
            else:
                report(Result.sent(item, None, str(outcome)))

    async def close(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False)  # idle: every batch waited for its fsyncs
