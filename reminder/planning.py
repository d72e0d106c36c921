"""Everything that decides when reminders go out, loaded once and passed down."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from reminder.calendar import WorkCalendar
from reminder.contacts import Contacts
from reminder.planner import Target
from reminder.policy import Policy


@dataclass(frozen=True, slots=True)
class Planning:
    policy: Policy
    calendar: WorkCalendar
    zone: ZoneInfo
    contacts: Contacts

    def policy_for(self, target: Target) -> Policy:
        return self.policy.for_task(target.section, target.task.no)

    def fingerprint(self) -> str:
        """Changes when anything that moves ``next_at`` or group members changes."""
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
