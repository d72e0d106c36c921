"""Step 2 of delivery: a claimed message → what goes on the wire. Pure.

Every message (a letter, a digest, an escalation list) is rendered from the snapshot
taken when it was enqueued, so this needs no database. The same code runs in the
sending process, or in worker processes when a batch is big (``Delivery`` keeps a small
pool): each worker builds its own ``Preparer`` once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from reminder.channels.mime import build_email
from reminder.contacts import Contacts
from reminder.context import report_context
from reminder.errors import DeliveryError
from reminder.render import Renderer, TemplateProblem
from reminder.rows import Claimed, Outgoing, Result
from reminder.settings import Settings
from reminder.text import fit

_PARTS = {"email": ("subject", "text", "html"), "sms": ("sms",)}
_ROBOT_PARTS = ("subject", "md")


class Preparer:
    """Step 2 for one message: pure (the clock's reading is passed in)."""

    def __init__(self, settings: Settings, contacts: Contacts, renderer: Renderer) -> None:
        self.settings = settings
        self.contacts = contacts
        self.renderer = renderer
        self.zone = settings.zone
        self.signature = settings.sms_signature
        self.reply_to = settings.reply_to

    def prepare(self, row: Claimed, now: dt.datetime) -> Outgoing:
        """Raises ``DeliveryError`` or ``TemplateProblem`` if it cannot be built."""
        values = report_context(
            kind=row.kind,
            recipient=row.recipient_name,
            payload=row.payload,
            settings=self.settings.office,
        )
        values["channel"] = row.channel
        base = Outgoing(
            id=row.id,
            key=row.key,
            kind=row.kind,
            channel=row.channel,
            to=row.recipient,
            recipient_name=row.recipient_name,
            scheduled_day=row.scheduled_for.astimezone(self.zone).date().isoformat(),
        )
        if row.channel == "email":
            parts = self.renderer.render(row.kind, values, _PARTS["email"])
            smtp = self.settings.smtp
            data, _ = build_email(
                from_name=smtp.from_name,
                from_address=smtp.from_address,
                to_name=row.recipient_name,
                to_address=row.recipient,
                subject=parts.subject,
                text=parts.text,
                html=parts.html,
                key=row.key,
                date=now.astimezone(self.zone),
                reply_to=self.reply_to,
                kind=row.kind,
            )
            return base._replace(subject=parts.subject, data=data)
        if row.channel == "sms":
            parts = self.renderer.render(row.kind, values, _PARTS["sms"])
            link = str(row.payload.get("link") or "")
            body = fit(self.signature + parts.sms, self.settings.sms.max_segments, link)
            return base._replace(body=body)
        parts = self.renderer.render(row.kind, values, _ROBOT_PARTS)
        mention = row.payload.get("mention") or {}
        mobile = str(mention.get("mobile") or "") if row.channel == "dingtalk" else ""
        return base._replace(subject=parts.subject, body=parts.md, mention=mobile)

    def load(self, kinds: Iterable[tuple[str, str]]) -> None:
        """Compile the templates of these (kind, channel) pairs ahead of rendering."""
        for kind, channel in kinds:
            self.renderer.load(kind, _PARTS.get(channel, _ROBOT_PARTS))

    def chunk(self, rows: Sequence[Claimed], now: dt.datetime) -> list[Outgoing | Result]:
        out: list[Outgoing | Result] = []
        for row in rows:
            try:
                out.append(self.prepare(row, now))
            except (TemplateProblem, DeliveryError) as exc:
                out.append(Result(row.id, "dead", None, str(exc)))
        return out


_WORKER: Preparer | None = None


def start_worker(
    settings: Settings, contacts: Contacts, templates: Mapping[str, str] | None
) -> None:
    """A worker process's initializer: ``templates``, the override folder's files as the
    parent process read them (``Renderer.sources``)."""
    global _WORKER  # noqa: PLW0603 - one Preparer per worker process, built once
    _WORKER = Preparer(settings, contacts, Renderer(templates))


def render_chunk(rows: Sequence[Claimed], now: dt.datetime) -> list[Outgoing | Result]:
    """What a worker process runs for one chunk."""
    assert _WORKER is not None, "the worker was not started"
    return _WORKER.chunk(rows, now)
