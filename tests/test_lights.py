"""The traffic lights counted in SQL (status, the web) agree with the digest's rule in
Python, task by task, through the year and under policy overrides."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

import pytest

from reminder.digest import light
from reminder.policy import Policy
from reminder.settings import load_config
from reminder.store.db import open_store
from reminder.store.lights import task_lights
from reminder.store.tasks import load_ledger
from tests.conftest import Cli, seed_inputs

DAYS = [dt.date(2018, 1, 2), dt.date(2018, 3, 30), dt.date(2018, 6, 29), dt.date(2018, 12, 31)]

OVERRIDES = {
    "shipped": None,
    # a section counts only dated deadlines, three tasks count windows only, one none
    "overrides": {
        "override": [
            {"sections": [2], "overdue": {"kinds": ["date"]}},
            {"tasks": [5, 40, 83], "overdue": {"kinds": ["window"]}},
            {"tasks": [1], "overdue": {"kinds": []}},
        ]
    },
}


@pytest.mark.parametrize("policy", OVERRIDES, ids=list(OVERRIDES))
def test_sql_lights_count_what_the_digest_rule_says(cli: Cli, policy: str) -> None:
    _, planning = seed_inputs(cli)
    for no in ("3", "41", "84"):
        assert cli("done", no).code == 0
    changes = OVERRIDES[policy]
    if changes is not None:
        planning = dataclasses.replace(planning, policy=Policy.model_validate(changes))
    store = open_store(load_config().settings.db)
    try:
        with store.read() as session:
            ledger = load_ledger(session)
            assert ledger is not None
            seen = []
            for day in DAYS:
                expected = Counter(light(task, day, ledger, planning) for task in ledger.tasks)
                assert task_lights(session, planning, day) == expected, day
                assert expected["done"] == 3
                seen.append(expected)
    finally:
        store.dispose()
    # not a trivial agreement: through the year tasks turn yellow and red
    assert seen[0] != seen[-1] and seen[-1]["red"] > seen[0]["red"]
    assert any(counts["yellow"] for counts in seen)
