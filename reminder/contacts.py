"""contacts.toml: the units, their aliases and addresses, the groups and the supervisors.

Loaded once, validated up front. Structure errors (bad TOML, unknown keys, duplicate
names, a group member that is no unit) are a ``ConfigError`` naming file and item.
An address that is present but invalid does not stop the program: it is kept out of
delivery and reported by ``reminder check`` as an error (``Contacts.problems``).
"""

from __future__ import annotations

import functools
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from reminder.errors import ConfigError
from reminder.ledger.model import UnitKind
from reminder.ledger.units import Directory, DirectoryEntry, normalise_name
from reminder.policy import Channel, Kind
from reminder.settings import plaintext_http

_MOBILE = re.compile(r"^(?:\+?86)?1[3-9]\d{9}$")


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_as_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _Reachable(_Strict):
    """Someone a message can go to: a unit or a supervisor."""

    name: str = Field(min_length=1)
    contact: str = ""
    phone: str = ""  # the office line letters and digests give (default: the first mobile)
    email: StrList = []
    mobile: StrList = []
    webhook: str = ""  # a WeCom or DingTalk group robot
    wecom_userid: str = ""  # the contact's WeCom account: a WeCom post can @ only that
    robot: Literal["wecom", "dingtalk", ""] = ""  # default: told by the webhook's host
    robot_secret_env: str = ""  # the environment variable holding a DingTalk signing secret
    # per kind of message, the channels to use instead of [policy.channels]
    channels: dict[Kind, list[Channel]] = {}

    @property
    def telephone(self) -> str:
        """The number to call: the office line, else the first valid mobile."""
        return self.phone or next(iter(valid_mobiles(self.mobile)), "")

    @property
    def robot_kind(self) -> str:
        if self.robot:
            return self.robot
        return "dingtalk" if "dingtalk" in self.webhook else "wecom"


class UnitContact(_Reachable):
    aliases: StrList = []
    kind: Literal["unit", "enterprise"] = "unit"


class Group(_Strict):
    name: str = Field(min_length=1)
    aliases: StrList = []
    members: StrList = []


class Supervisor(_Reachable):
    sections: list[str | int] = []
    units: StrList = []


class _ContactsFile(_Strict):
    unit: list[UnitContact] = []
    group: list[Group] = []
    supervisor: list[Supervisor] = []


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of a check: ``error`` makes `reminder check` exit 1."""

    severity: Literal["error", "warning"]
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Contacts:
    path: str
    units: tuple[UnitContact, ...]
    groups: tuple[Group, ...]
    supervisors: tuple[Supervisor, ...]
    directory: Directory
    problems: tuple[Problem, ...]
    _by_name: dict[str, UnitContact | Supervisor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # what callers work out from a unit's entry and keep with it (its routes per kind)
    memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for supervisor in self.supervisors:
            self._by_name[supervisor.name] = supervisor
        for unit in self.units:  # a unit wins over a supervisor of the same name
            self._by_name[unit.name] = unit

    def reachable(self, name: str) -> UnitContact | Supervisor | None:
        """A unit or a supervisor by name: whoever a message is addressed to."""
        found = self._by_name.get(name)
        return found if found is not None else self.unit(name)

    def unit(self, name: str) -> UnitContact | None:
        found = self._by_name.get(name)
        if isinstance(found, UnitContact):
            return found
        entry = self.directory.resolve(name)
        if entry is None or entry.name == name:
            return None
        found = self._by_name.get(entry.name)
        return found if isinstance(found, UnitContact) else None

    def reach(self, name: str) -> dict[str, str]:
        """Whom to call at a unit, as letters and digests say it: its contact and phone."""
        who = self.unit(name)
        return {"contact": who.contact if who else "", "phone": who.telephone if who else ""}

    def group(self, name: str) -> Group | None:
        entry = self.directory.resolve(name)
        canonical = entry.name if entry else name
        return next((group for group in self.groups if group.name == canonical), None)

    def plaintext_webhooks(self) -> list[tuple[str, str]]:
        """(where, what) for each robot webhook in plain ``http://`` to a host that is
        not loopback: its URL carries the robot's key (refused unless ``[robots]
        allow_plaintext``, by `check` and when the robot sender is made)."""
        found = []
        for table, items in (("unit", self.units), ("supervisor", self.supervisors)):
            for item in items:
                if item.webhook and plaintext_http(item.webhook):
                    host = urllib.parse.urlsplit(item.webhook).hostname
                    found.append(
                        (
                            f"{self.path}: [[{table}]] {item.name!r}: webhook",
                            f"plaintext http:// to {host} refused (the URL carries the "
                            "robot's key): use https://, or [robots] allow_plaintext = true",
                        )
                    )
        return found

    def has_contact(self, name: str) -> bool:
        """A unit can be reached, or a group has members."""
        unit = self.unit(name)
        if unit is not None:
            return bool(valid_emails(unit.email) or valid_mobiles(unit.mobile) or unit.webhook)
        group = self.group(name)
        return group is not None and bool(group.members)


def valid_emails(addresses: list[str]) -> list[str]:
    return [address for address in addresses if _email_problem(address) is None]


def valid_mobiles(numbers: list[str]) -> list[str]:
    return [number for number in numbers if _MOBILE.match(number)]


MOBILE_PROBLEM = "not a mobile number (11 digits, 1[3-9]…)"


def invalid_addresses(who: _Reachable, channel: str) -> list[tuple[str, str]]:
    """The addresses of a channel that cannot be used, each with why: (address, reason)."""
    if channel == "email":
        return [
            (address, reason)
            for address in who.email
            if (reason := _email_problem(address)) is not None
        ]
    if channel == "sms":
        return [(number, MOBILE_PROBLEM) for number in who.mobile if not _MOBILE.match(number)]
    return []


# the addresses come from contacts.toml: one entry a mailbox, so the cache holds them all
# (at 4,096 a 10,000-unit directory cycled through it and validated each address again
# for each letter, 0.7 s of a 20,000-letter tick)
@functools.lru_cache(maxsize=65536)
def _email_problem(address: str) -> str | None:
    from email_validator import EmailNotValidError, validate_email  # noqa: PLC0415 - 50 ms

    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def _address_problems(kind: str, item: _Reachable) -> list[Problem]:
    where = f"{kind} {item.name}"
    problems = [
        Problem("error", where, f"invalid email {address!r}: {reason}")
        for address, reason in invalid_addresses(item, "email")
    ]
    problems += [
        Problem("error", where, f"invalid mobile number {number!r} (11 digits, 1[3-9]…)")
        for number, _reason in invalid_addresses(item, "sms")
    ]
    if item.webhook and not re.match(r"^https?://[^\s/]+", item.webhook):
        problems.append(Problem("error", where, f"invalid webhook URL {item.webhook!r}"))
    return problems


def _pydantic_messages(path: str, data: dict[str, object], exc: ValidationError) -> list[str]:
    """One message per error, naming the table, the entry (number and name) and the key."""
    messages = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = path
        if len(loc) >= 2 and isinstance(loc[1], int):
            table, index = str(loc[0]), loc[1]
            items = data.get(table)
            name = ""
            if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
                name = str(items[index].get("name", ""))
            where += f": [[{table}]] #{index + 1}" + (f" {name!r}" if name else "")
            loc = loc[2:]
        key = ".".join(str(part) for part in loc)
        value = f" (got {error['input']!r})" if "input" in error and key else ""
        messages.append(f"{where}: {key + ': ' if key else ''}{error['msg']}{value}")
    return messages


def _owners(parsed: _ContactsFile, path: str) -> tuple[dict[str, str], list[str]]:
    """Who owns each name and alias (normalised), and the names two entries claim."""
    owner: dict[str, str] = {}
    errors: list[str] = []
    for kind, items in (("unit", parsed.unit), ("group", parsed.group)):
        for item in items:
            for key in (item.name, *item.aliases):
                normal = normalise_name(key)
                if normal in owner and owner[normal] != item.name:
                    errors.append(
                        f"{path}: [[{kind}]] {item.name!r}: name or alias {key!r} "
                        f"is already used by {owner[normal]!r}"
                    )
                    continue
                owner[normal] = item.name
    unit_names = {unit.name for unit in parsed.unit}
    errors += [
        f"{path}: [[group]] {group.name!r}: member {member!r} is not a [[unit]] name"
        for group in parsed.group
        for member in group.members
        if member not in unit_names
    ]
    return owner, errors


def _directory(parsed: _ContactsFile) -> Directory:
    entries = [
        DirectoryEntry(unit.name, UnitKind(unit.kind), tuple(unit.aliases)) for unit in parsed.unit
    ]
    entries += [
        DirectoryEntry(group.name, UnitKind.GROUP, tuple(group.aliases), tuple(group.members))
        for group in parsed.group
    ]
    return Directory(tuple(entries))


def _problems(parsed: _ContactsFile, owner: dict[str, str]) -> list[Problem]:
    """What `check` reports and delivery works around: bad addresses, nobody to reach."""
    problems: list[Problem] = []
    for unit in parsed.unit:
        problems += _address_problems("unit", unit)
    for supervisor in parsed.supervisor:
        problems += _address_problems("supervisor", supervisor)
        if not (supervisor.email or supervisor.mobile or supervisor.webhook):
            problems.append(
                Problem("warning", f"supervisor {supervisor.name}", "no email, mobile or webhook")
            )
        problems += [
            Problem("error", f"supervisor {supervisor.name}", f"watches unknown unit {name!r}")
            for name in supervisor.units
            if normalise_name(name) not in owner
        ]
    for group in parsed.group:
        if not group.members:
            problems.append(
                Problem("warning", f"group {group.name}", "has no members: nobody is reminded")
            )
    return problems


def parse_contacts(text: str, path: str) -> Contacts:
    """Contacts from the text of a contacts.toml; ``path`` is used in messages.

    Every structure error is found before one is raised (``ConfigError.problems``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        parsed = _ContactsFile.model_validate(data)
    except ValidationError as exc:
        first, *more = _pydantic_messages(path, data, exc)
        raise ConfigError(first, more=more) from None
    owner, errors = _owners(parsed, path)
    if errors:
        raise ConfigError(errors[0], more=errors[1:])
    return Contacts(
        path=path,
        units=tuple(parsed.unit),
        groups=tuple(parsed.group),
        supervisors=tuple(parsed.supervisor),
        directory=_directory(parsed),
        problems=tuple(_problems(parsed, owner)),
    )


def load_contacts(path: Path) -> Contacts:
    """Read contacts.toml; a missing file is an empty directory (``check`` warns)."""
    if not path.exists():
        warning = Problem("warning", str(path), "no contacts file: no unit can be reached")
        return Contacts(str(path), (), (), (), Directory(), (warning,))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_contacts(text, str(path))
