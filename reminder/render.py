"""Rendering messages from Jinja2 templates. Pure: a context in, texts out.

One template name (the kind of message: ``letter``, ``digest``, ``escalation``) has up to
five parts, each a file: ``<name>.subject.j2``, ``<name>.text.j2``, ``<name>.html.j2``,
``<name>.sms.j2`` and ``<name>.md.j2`` (robots). The bundled templates are in the
repository's ``templates/`` (installed as ``reminder.templates``); a deployment
overrides any file by putting one of the same name in its own folder
(``[messages] templates``).

Every template runs in Jinja2's sandbox with ``StrictUndefined`` (a misspelt variable
is an error, not an empty string), autoescaping for the HTML part only, and limits a
template cannot talk its way around: ``'x' * 10**9`` and ``9 ** 999999999`` are refused
before they are computed, ``range`` is capped by the sandbox, and a rendered part
longer than ``MAX_OUTPUT`` characters is an error.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    select_autoescape,
)
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from reminder import wording
from reminder.errors import ConfigError
from reminder.text import shorten


def _bundled() -> Path:
    """The templates shipped with the package (reminder.templates: the repository's
    templates/ folder, mapped into the package when it is installed)."""
    found = importlib.resources.files("reminder.templates")
    return Path(str(found))


BUNDLED = _bundled()
PARTS = ("subject", "text", "html", "sms", "md")
MAX_SEQUENCE = 100_000  # characters or items a `*` may produce
MAX_POWER_BITS = 4_096  # bits a `**` may produce
MAX_OUTPUT = 1_000_000  # characters of one rendered part


class TemplateProblem(ConfigError):
    """A template that cannot be rendered: names the template, the line and why."""


class LimitedSandbox(SandboxedEnvironment):
    """The sandbox with ``*`` and ``**`` checked before they run, and ``t.no`` read from
    a snapshot's dict at once."""

    intercepted_binops = frozenset(["*", "**"])

    def getattr(self, obj: Any, attribute: str) -> Any:
        # A message is rendered from a snapshot of plain dicts: ``t.no`` is ``t["no"]``.
        # Jinja tries the attribute first and the key after an AttributeError (a third
        # of a letter's rendering); a key of a plain dict is data, safe to hand out.
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | bytes | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_SEQUENCE:
                    raise SecurityError(f"a repetition longer than {MAX_SEQUENCE}")
            return operator.mul(left, right)
        if op == "**":
            whole = isinstance(left, int) and isinstance(right, int) and right > 0
            if whole and max(left.bit_length(), 1) * right > MAX_POWER_BITS:
                raise SecurityError(f"a power larger than {MAX_POWER_BITS} bits")
            return operator.pow(left, right)
        return super().call_binop(context, op, left, right)


def _as_date(day: dt.date | str | None) -> dt.date | None:
    if isinstance(day, str):
        return dt.date.fromisoformat(day[:10]) if day else None
    return day


def cn_date(day: dt.date | str | None) -> str:
    """2018年10月8日 (a date, or an ISO date in a snapshot)."""
    found = _as_date(day)
    return "" if found is None else wording.cn_date(found)


def md_date(day: dt.date | str | None) -> str:
    """10月8日: a date of the letter's own year, said short."""
    found = _as_date(day)
    return "" if found is None else f"{found.month}月{found.day}日"


def weekday(day: dt.date | str | None) -> str:
    found = _as_date(day)
    return "" if found is None else wording.cn_weekday(found)


def md_time(moment: str | None) -> str:
    """'2018-10-08 09:00' (a snapshot's moment) → 10月8日 09:00."""
    if not moment:
        return ""
    return f"{md_date(moment)} {moment[11:16]}".strip()


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str = ""
    text: str = ""
    html: str = ""
    sms: str = ""
    md: str = ""


class Renderer:
    """Compiles each template once and renders its parts."""

    def __init__(self, override: Path | None = None) -> None:
        if override is not None and not override.is_dir():
            raise ConfigError(f"templates folder {override}: no such folder")
        loaders = [FileSystemLoader(str(override))] if override else []
        loaders.append(FileSystemLoader(str(BUNDLED)))
        self.env = LimitedSandbox(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=False,  # templates are read once per process; no stat() per render
        )
        filters: dict[str, Callable[..., Any]] = {
            "cn_date": cn_date,
            "md_date": md_date,
            "md_time": md_time,
            "weekday": weekday,
            "cn_numeral": wording.cn_numeral,
            "shorten": shorten,
        }
        self.env.filters.update(filters)
        self._globals = dict(self.env.globals)  # range (the sandbox's), dict, namespace, …

    def names(self) -> list[str]:
        """Every template name with at least one part, bundled or overridden."""
        found = {
            name.split(".", 1)[0]
            for name in self.env.list_templates(extensions=["j2"])
            if not name.startswith("_")
        }
        return sorted(found)

    def part(self, name: str, part: str, context: Mapping[str, Any]) -> str:
        return self._part(name, part, {**self._globals, **context})

    def render(self, name: str, context: Mapping[str, Any], parts: Sequence[str]) -> Rendered:
        values = {**self._globals, **context}  # one copy for every part of the message
        texts = {part: self._part(name, part, values) for part in parts}
        if "subject" in texts:  # a subject is one line, whatever the task text holds
            texts["subject"] = " ".join(texts["subject"].split())
        return Rendered(**texts)

    def _part(self, name: str, part: str, values: dict[str, Any]) -> str:
        """One part, rendered from ``values`` (the globals and the message's context).

        What ``Template.render`` does, without building the context twice per part (a
        copy of the variables, then of them merged with the globals): the templates
        share ``values`` and cannot change it, as a template's own variables are kept
        in its context. A third of the rendering time for a three-part e-mail.
        """
        file = f"{name}.{part}.j2"
        try:
            template = self.env.get_template(file)
            try:
                context = template.new_context(values, shared=True)
                text = self.env.concat(template.root_render_func(context))
            except Exception:
                self.env.handle_exception()  # re-raised with the template's own lines
        except TemplateNotFound:
            raise TemplateProblem(f"template {file}: not found") from None
        except TemplateSyntaxError as exc:
            raise TemplateProblem(
                f"template {exc.filename or file}:{exc.lineno}: {exc.message}"
            ) from None
        except (TemplateError, SecurityError, TypeError, ValueError, ArithmeticError) as exc:
            raise TemplateProblem(f"template {file}:{_line(exc, file)}: {exc}") from None
        if len(text) > MAX_OUTPUT:
            raise TemplateProblem(f"template {file}: renders to more than {MAX_OUTPUT} characters")
        return text


def _line(exc: BaseException, file: str) -> str:
    """The template line an error was raised on, from the traceback Jinja rewrites."""
    tb = exc.__traceback__
    line = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(file):
            line = str(tb.tb_lineno)
        tb = tb.tb_next
    return line
