"""Rendering messages from Jinja2 templates. Pure: a context in, texts out.

One template name (the kind of message: ``letter``, ``digest``, ``escalation``) has up to
five parts, each a file: ``<name>.subject.j2``, ``<name>.text.j2``, ``<name>.html.j2``,
``<name>.sms.j2`` and ``<name>.md.j2`` (robots). The bundled templates are in the
repository's ``templates/`` (installed as ``reminder.templates``); a deployment
overrides any file by putting one of the same name in its own folder
(``[messages] templates``).

Every template runs in Jinja2's sandbox with ``StrictUndefined`` (a misspelt variable
is an error, not an empty string), autoescaping for the HTML part only, and a budget a
template cannot talk its way around (``reminder.sandbox``): 2 s of time, 1,000,000
characters of output, and checks on whatever could build a huge value.

Whatever goes wrong while a template renders (a Jinja2 error, a ``KeyError`` of a
``str.format``, a ``RecursionError``, the budget) is a ``TemplateProblem`` naming the file
and the line: the messages that use that template fail, nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.resources
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    DictLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    select_autoescape,
)

from reminder import wording
from reminder.errors import ConfigError
from reminder.sandbox import (
    MAX_OUTPUT,
    MAX_POWER_BITS,
    MAX_SECONDS,
    MAX_SEQUENCE,
    WATCHDOG,
    CountingSandbox,
    LimitedSandbox,
    Overrun,
    start_budget,
)
from reminder.text import shorten

__all__ = [
    "BUNDLED",
    "MAX_OUTPUT",
    "MAX_POWER_BITS",
    "MAX_SECONDS",
    "MAX_SEQUENCE",
    "PARTS",
    "LimitedSandbox",
    "Rendered",
    "Renderer",
    "TemplateProblem",
]


def _bundled() -> Path:
    """The templates shipped with the package (reminder.templates: the repository's
    templates/ folder, mapped into the package when it is installed)."""
    found = importlib.resources.files("reminder.templates")
    return Path(str(found))


BUNDLED = _bundled()
PARTS = ("subject", "text", "html", "sms", "md")


class TemplateProblem(ConfigError):
    """A template that cannot be rendered: names the template, the line and why."""


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


def read_folder(folder: Path) -> dict[str, str]:
    """Every file of a templates folder (its subfolders too), by its name under it."""
    if not folder.is_dir():
        raise ConfigError(f"templates folder {folder}: no such folder")
    sources: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            try:
                sources[path.relative_to(folder).as_posix()] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot be read as UTF-8 text: {exc}") from None
    return sources


class Renderer:
    """Compiles each template once and renders its parts."""

    def __init__(
        self, override: Path | Mapping[str, str] | None = None, seconds: float = MAX_SECONDS
    ) -> None:
        self.seconds = seconds  # the time budget of one part
        # the override folder read once, here: what `check` and start-up rendered is what
        # is sent, whatever is edited on disk before a reload (and render workers get
        # this snapshot, not the folder)
        self.sources: dict[str, str] | None = (
            None
            if override is None
            else read_folder(override)
            if isinstance(override, Path)
            else dict(override)
        )
        self.override = DictLoader(self.sources) if self.sources is not None else None
        # the bundled templates alone, and (with an override folder) the deployment's
        # first: its templates, and the bundled ones that import one of them, render
        # in the counting sandbox; the bundled ones are ours, reviewed and tested, and
        # keep their speed (bench/render.py: the counting costs about a quarter)
        self.bundled = _environment(LimitedSandbox, [FileSystemLoader(str(BUNDLED))])
        self.env = self.bundled
        if self.override is not None:
            loaders = [self.override, FileSystemLoader(str(BUNDLED))]
            self.env = _environment(CountingSandbox, loaders)
        self._globals = dict(self.env.globals)  # range (the sandbox's), dict, namespace, …
        self._envs: dict[str, LimitedSandbox] = {}
        # a template that ran out of time once is not run again by this process: a
        # batch of a thousand messages would otherwise take a thousand budgets
        self._overran: dict[str, str] = {}

    def _env_for(self, file: str) -> LimitedSandbox:
        """The counting sandbox for a file of the override folder, or a file that
        imports, includes or extends one; the bundled environment otherwise."""
        found = self._envs.get(file)
        if found is None:
            found = self.env if self._uses_override(file) else self.bundled
            self._envs[file] = found
        return found

    def _uses_override(self, file: str) -> bool:
        if self.override is None:
            return False
        seen: set[str] = set()
        todo = [file]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            try:
                self.override.get_source(self.env, name)
                return True
            except TemplateNotFound:
                pass
            try:
                source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
                references = list(meta.find_referenced_templates(self.env.parse(source)))
            except TemplateError:
                return True  # reported by the counting sandbox, as any other error
            if None in references:  # a name computed at render time
                return True
            todo += [ref for ref in references if ref is not None]
        return False

    def names(self) -> list[str]:
        """Every template name with at least one part, bundled or overridden."""
        found = {
            name.split(".", 1)[0]
            for name in self.env.list_templates(extensions=["j2"])
            if not name.startswith("_")
        }
        return sorted(found)

    def load(self, name: str, parts: Sequence[str]) -> None:
        """Compile the parts ahead (Jinja2 caches them): a delivery run does it in a
        thread, as a compile takes tens of ms. Errors are left to ``render`` to report."""
        for part in parts:
            file = f"{name}.{part}.j2"
            with contextlib.suppress(Exception):
                self._compile_with_references(file)

    def _compile_with_references(self, file: str) -> None:
        """``file`` and the templates it imports, includes or extends (``_letter.j2``):
        those are compiled when first rendered otherwise, on the event loop (~40 ms)."""
        env = self._env_for(file)
        todo, seen = [file], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            env.get_template(name)
            source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            todo += [r for r in meta.find_referenced_templates(env.parse(source)) if r]

    def part(self, name: str, part: str, context: Mapping[str, Any]) -> str:
        return self._part(name, part, {**self._globals, **context})

    def render(self, name: str, context: Mapping[str, Any], parts: Sequence[str]) -> Rendered:
        values = {**self._globals, **context}  # one copy for every part of the message
        texts = {part: self._part(name, part, values) for part in parts}
        if "subject" in texts:  # a subject is one line, whatever the task text holds
            texts["subject"] = " ".join(texts["subject"].split())
        return Rendered(**texts)

    def _part(self, name: str, part: str, values: dict[str, Any]) -> str:
        """One part, rendered from ``values`` (the globals and the message's context)
        within the budget; any error is a ``TemplateProblem`` with the file and line."""
        file = f"{name}.{part}.j2"
        if file in self._overran:
            raise TemplateProblem(self._overran[file])
        try:
            template = self._env_for(file).get_template(file)
        except TemplateNotFound:
            raise TemplateProblem(f"template {file}: not found") from None
        except TemplateSyntaxError as exc:
            raise TemplateProblem(
                f"template {exc.filename or file}:{exc.lineno}: {exc.message}"
            ) from None
        except Exception as exc:  # a template that cannot be read or compiled
            raise TemplateProblem(f"template {file}: {_reason(exc)}") from None
        ticket = WATCHDOG.arm(self.seconds)
        try:
            try:
                start_budget()
                text = _generate(template, values, template.environment is not self.bundled)
            finally:
                WATCHDOG.disarm(ticket)
        except Overrun as exc:
            # a shot that landed in the ``finally`` before ``disarm`` ran: disarmed now, so
            # that no shot follows the thread out of the render
            WATCHDOG.disarm(ticket)
            where = _where(exc, template)
            message = f"template {where}: took longer than {self.seconds:g} s to render"
            self._overran[file] = message
            raise TemplateProblem(message) from None
        except Exception as exc:
            raise TemplateProblem(f"template {_where(exc, template)}: {_reason(exc)}") from None
        return text


def _generate(template: Template, values: dict[str, Any], stream: bool) -> str:
    """The part's text as Jinja2 generates it, stopped past MAX_OUTPUT characters as it is
    generated (``stream``: a template of the override folder) or refused once made.

    ``Template.generate`` without building the context twice per part (a copy of the
    variables, then of them merged with the globals): the templates share ``values``
    and cannot change it, as a template's own variables are kept in its context. A
    third of the rendering time for a three-part e-mail (bench/render.py);
    tests/test_render.py pins the Jinja2 internals this relies on.
    """
    generated = template.root_render_func(template.new_context(values, shared=True))
    if not stream:  # a bundled template: measured once it is made
        text = "".join(generated)
        if len(text) > MAX_OUTPUT:
            raise _TooLong
        return text
    parts: list[str] = []
    size = 0
    while block := list(islice(generated, 256)):  # measured 256 chunks at a time, in C
        size += sum(map(len, block))
        if size > MAX_OUTPUT:
            raise _TooLong
        parts += block
    return "".join(parts)


class _TooLong(Exception):
    pass


def _reason(exc: BaseException) -> str:
    """What went wrong, said as Jinja2 says it, or with the error's type for the others
    (a bare ``KeyError`` says only ``'unit'``)."""
    if isinstance(exc, _TooLong):
        return f"renders to more than {MAX_OUTPUT} characters (the render budget)"
    if isinstance(exc, TemplateError):
        return str(exc.message if exc.message is not None else exc)
    if isinstance(exc, RecursionError):
        return "too deep a recursion (a macro calling itself?)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _environment(kind: type[LimitedSandbox], loaders: Sequence[BaseLoader]) -> LimitedSandbox:
    env = kind(
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
    env.filters.update(filters)
    if isinstance(env, CountingSandbox):
        env.guard_filters()
    return env


def _where(exc: BaseException, template: Template) -> str:
    """file:line of the template line an error was raised on (the last frame of the
    template's code in the traceback, mapped to the template's line), or the file."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == template.filename:
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    name = template.name or "?"
    return name if line is None else f"{name}:{line}"
