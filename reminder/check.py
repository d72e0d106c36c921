"""`reminder check`: what in the config and the ledger would stop a reminder going out.

Pure: takes what was loaded, returns ``Problem``s. Errors make the command exit 1:
an unknown unit or an invalid address means someone will not hear of a deadline.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from reminder.calendar import adjustment_warning
from reminder.contacts import Contacts, Problem
from reminder.context import TaskFacts, report_context
from reminder.digest import ESCALATION_FIELDS, build_digest
from reminder.ledger.model import DeadlineKind, Role, Task, UnitKind
from reminder.letters import LetterContext, LetterItem, build_letter
from reminder.policy import Kind
from reminder.records import DigestInputs, StoredLedger
from reminder.render import PARTS, Renderer, TemplateProblem
from reminder.rules import Rules
from reminder.secrets import SecretFile
from reminder.settings import ENV_PREFIX, Config, OfficeSettings
from reminder.text import CONTROL


def unit_problems(tasks: list[Task], contacts: Contacts) -> list[Problem]:
    """Units the directory does not know, and known units nobody can reach."""
    unknown: dict[str, list[int]] = defaultdict(list)
    unreachable: dict[str, list[int]] = defaultdict(list)
    for task in tasks:
        for unit in task.units:
            if contacts.directory.resolve(unit.name) is None:
                unknown[unit.name].append(task.no)
            elif not contacts.has_contact(unit.name):
                unreachable[unit.name].append(task.no)
    problems = [_unknown_unit(name, numbers, contacts) for name, numbers in unknown.items()]
    for name, numbers in unreachable.items():
        entry = contacts.directory.resolve(name)
        what = "group has no members" if entry and entry.kind is UnitKind.GROUP else "no contact"
        problems.append(Problem("warning", f"unit {name}", f"{what} (tasks {_numbers(numbers)})"))
    return problems


def _unknown_unit(name: str, numbers: list[int], contacts: Contacts) -> Problem:
    """A unit the directory does not know; one whose name holds a control character
    (pasted from another document) is said to, shown escaped, rather than printed raw."""
    tasks = f"tasks {_numbers(numbers)}"
    found = _control(name)
    if found is not None:
        return Problem("error", "unit", f"{found} ({tasks}); correct the ledger's cell")
    return Problem("error", f"unit {name}", f"not in {contacts.path} ({tasks}); add it or an alias")


def ledger_problems(ledger: StoredLedger) -> list[Problem]:
    problems: list[Problem] = []
    for stored in ledger.tasks:
        task = stored.task
        where = f"task {task.no} (line {task.line})"
        if task.deadline.kind is DeadlineKind.UNKNOWN:
            problems.append(
                Problem(
                    "warning",
                    where,
                    f"cannot read 完成时限 {task.deadline.raw!r}: kept as written, "
                    "no deadline reminders",
                )
            )
        if not task.units:
            problems.append(Problem("error", where, "no responsible unit"))
    return problems


def check(
    contacts: Contacts, ledger: StoredLedger | None, templates: list[Problem] | None = None
) -> list[Problem]:
    problems = list(contacts.problems)
    if ledger is None:
        problems.append(Problem("warning", "store", "no ledger imported yet"))
        return problems
    problems += ledger_problems(ledger)
    problems += unit_problems([stored.task for stored in ledger.tasks], contacts)
    problems += templates or []
    return problems


def _numbers(numbers: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def _sample_items(task: TaskFacts, day: dt.date) -> list[tuple[Kind, dict[str, Any]]]:
    """One item of each kind about a task, dated around ``day`` so every branch shows."""
    around = {
        Kind.OVERDUE: day - dt.timedelta(days=10),
        Kind.DUE_TODAY: day,
        Kind.UPCOMING: day + dt.timedelta(days=3),
        Kind.WINDOW_START: day + dt.timedelta(days=3),
        Kind.PROGRESS: day,
        Kind.SUMMARY: day,
    }
    found = [(kind, {"milestone": milestone.isoformat()}) for kind, milestone in around.items()]
    # due on a day off: today is the last working day before it
    found.append((Kind.DUE_TODAY, {"milestone": (day + dt.timedelta(days=2)).isoformat()}))
    return found


def letter_samples(
    facts: dict[int, TaskFacts], context: LetterContext
) -> list[tuple[int, dict[str, Any]]]:
    """For every task, a letter to its lead unit and one to a cooperating unit carrying an
    item of every kind, and one letter with an agenda: (task number, payload)."""
    samples: list[tuple[int, dict[str, Any]]] = []
    for task in facts.values():
        lead = next((name for name, role in task.units if role == Role.LEAD.value), "")
        cooperating = next(
            (name for name, role in task.units if role == Role.COOPERATING.value), ""
        )
        for role, unit in ((Role.LEAD.value, lead), (Role.COOPERATING.value, cooperating)):
            if not unit:
                continue
            items = [
                LetterItem(f"sample:{task.no}:{n}", kind, unit, role, None, payload, task)
                for n, (kind, payload) in enumerate(_sample_items(task, context.day))
            ]
            samples.append((task.no, build_letter(context, unit, items, 1 + len(samples) % 2)))
    if samples:
        no, first = samples[0]
        agenda = [
            {
                "no": no,
                "number": f"第{no}项",
                "text": "示例任务",
                "role": "lead",
                "role_label": "牵头",
                "deadline": "全年",
                "next": None,
                "light": light,
                "standing": standing,
                "lead": first["unit"],
            }
            for light, standing in (("red", False), ("yellow", False), ("green", True))
        ]
        listed = {"agenda": agenda, "agenda_count": len(agenda)}
        samples.append((no, {**first, **listed}))
        samples.append((no, {**first, "groups": [], "counts": {}, "total": 0, **listed}))
    return samples


LETTER_CHANNELS = ("email", "sms", "wecom", "dingtalk")


def template_problems(
    renderer: Renderer, samples: list[tuple[int, dict[str, Any]]], office: OfficeSettings
) -> list[Problem]:
    """Render every part of the letter templates against every sample letter, on every
    channel. A template that fails is reported once, with the first task it failed on
    and how many more it would fail on."""
    failures: dict[str, list[int]] = defaultdict(list)
    for no, payload in samples:
        values = report_context(
            kind=Kind.LETTER.value, recipient=payload["unit"], payload=payload, settings=office
        )
        for channel in LETTER_CHANNELS:
            values["channel"] = channel
            for part in PARTS:
                try:
                    renderer.part(Kind.LETTER.value, part, values)
                except TemplateProblem as problem:
                    if no not in failures[problem.message]:
                        failures[problem.message].append(no)
    return [
        Problem(
            "error",
            "templates",
            f"{message} (task {numbers[0]}"
            + (f" and {len(numbers) - 1} more)" if len(numbers) > 1 else ")"),
        )
        for message, numbers in failures.items()
    ]


def report_samples(
    inputs: DigestInputs, planning: Rules, days: list[dt.date]
) -> list[tuple[str, dict[str, Any]]]:
    """Digests and escalation lists for every supervisor (and the whole ledger) on each
    day, with a notice line so that the templates' notice branch is rendered too."""
    samples: list[tuple[str, dict[str, Any]]] = []
    for day in days:
        since = dt.datetime.combine(day, dt.time(), tzinfo=planning.zone) - dt.timedelta(days=1)
        notices = [adjustment_warning([day.year + 1], planning.calendar.path) or ""]
        for supervisor in [None, *planning.contacts.supervisors]:
            payload = build_digest(inputs, supervisor, planning, day, since, notices)
            samples.append(("digest", payload))
            samples.append(
                (Kind.ESCALATION.value, {key: payload[key] for key in ESCALATION_FIELDS})
            )
    return samples


def report_problems(
    renderer: Renderer, samples: list[tuple[str, dict[str, Any]]], office: OfficeSettings
) -> list[Problem]:
    """Render every part of the digest and escalation list templates against samples."""
    problems: dict[str, str] = {}
    for kind, payload in samples:
        values = report_context(kind=kind, recipient="督查室", payload=payload, settings=office)
        for channel in LETTER_CHANNELS:
            values["channel"] = channel
            for part in PARTS:
                try:
                    renderer.part(kind, part, values)
                except TemplateProblem as problem:
                    problems.setdefault(problem.message, kind)
    return [Problem("error", "templates", message) for message in problems]


HEADER_SETTINGS = (("smtp", "from_name"), ("smtp", "from_address"), ("smtp", "reply_to"))


def _control(value: str) -> str | None:
    found = CONTROL.search(value)
    if found is None:
        return None
    char = found.group()
    what = "a line break" if char in "\r\n\x85\u2028\u2029" else "a control character"
    return f"contains {what} (U+{ord(char):04X}): {value!r}"


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def channel_problems(
    config: Config,
    contacts: Contacts,
    env: Mapping[str, str],
    loose_secrets: list[tuple[SecretFile, int]],
) -> list[Problem]:
    """What would break or expose the channels, one line each naming file and key:

    - a control character (CR, LF, …) in a contact's name or any other field of
      contacts.toml, or in a setting that goes into the e-mail headers (``[smtp]
      from_name``): the message would be refused as a header injection;
    - a robot webhook in plain ``http://`` to a host that is not loopback (its URL holds
      the robot's key), unless ``[robots] allow_plaintext``;
    - a credential file that group or others may read (a warning: it is still used);
    - letters sent by e-mail or SMS to people elsewhere with links to this machine
      (``[web] base_url`` on loopback: a warning, the links will not open for them).
    """
    problems: list[Problem] = []
    tables = (("unit", contacts.units), ("group", contacts.groups))
    for table, items in (*tables, ("supervisor", contacts.supervisors)):
        for item in items:
            for key, value in item:
                for text in _strings(value):
                    if (found := _control(text)) is not None:
                        where = f"{contacts.path}: [[{table}]] {item.name!r}: {key}"
                        problems.append(Problem("error", where, found))
    settings = config.settings
    for section, key in HEADER_SETTINGS:
        value = getattr(getattr(settings, section), key)
        if (found := _control(value)) is not None:
            env_name = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
            origin = f" (from {env_name})" if env_name in env else ""
            where = f"{config.reminder_path}: [{section}] {key}"
            problems.append(Problem("error", where, found + origin))
    if not settings.robots.allow_plaintext:
        problems += [Problem("error", *found) for found in contacts.plaintext_webhooks()]
    problems += [
        Problem(
            "warning",
            f"{found.origin} {found.path}",
            f"readable by group or others (mode {mode:04o}): chmod 600 {found.path}",
        )
        for found, mode in loose_secrets
    ]
    return problems + _links_problems(config)


def _links_problems(config: Config) -> list[Problem]:
    settings = config.settings
    sent = [name for name, on in (("SMTP", settings.smtp.host), ("SMS", settings.sms.url)) if on]
    if not sent or not settings.web.links_only_here:
        return []
    where = f"{config.reminder_path}: [web] base_url"
    return [
        Problem(
            "warning",
            where,
            f"{settings.web.base_url} is this machine, but letters go out by "
            f"{' and '.join(sent)}: their links will not open for the people who get them; "
            'set the address they reach (e.g. https://duban.example.org), or "" for no links',
        )
    ]


def rendering_problems(
    renderer: Renderer,
    inputs: DigestInputs,
    facts: dict[int, TaskFacts],
    planning: Rules,
    office: OfficeSettings,
    today: dt.date,
) -> list[Problem]:
    """Every template rendered against the ledger: letters about every task, digests and
    escalation lists for today and for a day in the ledger's own year, when most tasks
    are still open. What `check` reports, and what start-up and reloads refuse."""
    context = LetterContext(
        day=today,
        title=inputs.ledger.title,
        year=inputs.ledger.year,
        office=office,
        contacts=planning.contacts,
        calendar=planning.calendar,
        reminded={},
    )
    problems = template_problems(renderer, letter_samples(facts, context), office)
    days = [today, dt.date(inputs.ledger.year, 6, 25)]
    problems += report_problems(renderer, report_samples(inputs, planning, days), office)
    return problems
