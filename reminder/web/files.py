"""Attachments: one PDF or image per 报告办结, checked by content, kept by content hash.

A file is accepted only if its first bytes say PDF, PNG or JPEG (whatever its name or
declared type), and only up to ``[web] max_upload_mb``. It is written to a temporary
file and renamed into ``[web] state_dir``/attachments/<2 hex>/<sha256>: a crash leaves
no half-written attachment, and the same file uploaded twice is kept once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from reminder.errors import InputError
from reminder.store.answers import Attachment

SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)
_CHUNK = 1 << 16
_SHA = re.compile(r"[0-9a-f]{64}")


def sniff(head: bytes) -> str | None:
    """The content type the bytes say, of those accepted; None for anything else."""
    return next((kind for magic, kind in SIGNATURES if head.startswith(magic)), None)


def folder(state_dir: str) -> Path:
    return Path(state_dir) / "attachments"


def path_of(state_dir: str, sha256: str) -> Path | None:
    if not _SHA.fullmatch(sha256):
        return None
    return folder(state_dir) / sha256[:2] / sha256


def keep(state_dir: str, source: BinaryIO, name: str, limit: int) -> Attachment:
    """Check and store an upload; InputError (in Chinese) if it is not accepted."""
    head = source.read(16)
    kind = sniff(head)
    if kind is None:
        raise InputError("附件只接受PDF或图片（PNG、JPEG）")
    root = folder(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(head)
    size = len(head)
    fd, temporary = tempfile.mkstemp(dir=root, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise InputError(f"附件不能超过{limit // (1 << 20)}MB")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        target = root / sha[:2] / sha
        target.parent.mkdir(exist_ok=True)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    clean = re.sub(r"[\x00-\x1f/\\\\]", "_", Path(name or "附件").name)[:120] or "附件"
    return Attachment(sha, clean, kind)
