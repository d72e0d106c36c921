"""The rules the planner applies: the policy, the working calendar, the time zone and the
contacts, loaded once and passed down (a ``Rules`` is usually called ``planning``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from reminder.calendar import WorkCalendar
from reminder.contacts import Contacts
from reminder.ledger.model import Task
from reminder.planner import Target
from reminder.policy import Policy

# a task due within this many days (and not yet done) is yellow; past it, red
HORIZON_DAYS = 7
# of each list a digest carries (overdue, due soon, done, escalated units and each one's
# tasks, the rankings), this many, the most urgent first; ``counts`` has the whole numbers
# and the board lists everything. A province's ledger stays a readable message (and
# within the render budget); a ledger of the seed's size is never cut.
LISTED = 100


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything that decides when reminders go out, and the policy of each task."""

    policy: Policy
    calendar: WorkCalendar
    zone: ZoneInfo
    contacts: Contacts
    _fingerprint: list[str] = field(default_factory=list, init=False, repr=False, compare=False)
    _policies: dict[tuple[int, int], Policy] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def policy_of(self, section: tuple[int, str, str], task_no: int) -> Policy:
        """The policy of one task (its section's and its own overrides applied)."""
        key = (section[0], task_no)
        found = self._policies.get(key)
        if found is None:  # Policy.for_task caches too, but behind pydantic's attributes
            found = self._policies[key] = self.policy.for_task(section, task_no)
        return found

    def policy_for(self, target: Target) -> Policy:
        return self.policy_of(target.section, target.task.no)

    def counts_down(self, task: Task, section: tuple[int, str, str]) -> bool:
        """Whether a task's due date makes it yellow and red: it has one and its kind is
        among the policy's ``overdue.kinds`` (not 全年)."""
        deadline = task.deadline
        return (
            deadline.due is not None
            and deadline.kind in self.policy_of(section, task.no).overdue.kinds
        )

    def fingerprint(self) -> str:
        """Changes when anything that moves ``next_at`` or group members changes (what it
        is made of never changes: computed once)."""
        if not self._fingerprint:
            self._fingerprint.append(self._compute_fingerprint())
        return self._fingerprint[0]

    def _compute_fingerprint(self) -> str:
        facts = {
            "policy": self.policy.model_dump(mode="json"),
            "zone": self.zone.key,
            "calendar": self.calendar.fingerprint_facts(),
            "groups": {
                entry.name: list(entry.members)
                for entry in self.contacts.directory.entries
                if entry.members
            },
            "aliases": sorted(
                (alias, entry.name)
                for entry in self.contacts.directory.entries
                for alias in entry.aliases
            ),
        }
        text = json.dumps(facts, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()
