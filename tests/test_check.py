"""`reminder check`: what would stop a reminder from going out."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import time_machine

from reminder.contacts import parse_contacts
from tests.conftest import SEED, Cli
from tests.test_bad_input import config_copy, seed_with


def test_seed_with_bundled_contacts_is_clean(cli: Cli) -> None:
    assert cli("import", str(SEED)).code == 0
    # a day whose next 60 days chinese-calendar covers: no calendar warning either
    with time_machine.travel(dt.datetime(2018, 6, 1, 10, tzinfo=dt.UTC), tick=False):
        result = cli("check")
    assert result.code == 0
    assert result.out.strip() == "0 errors, 0 warnings"


def test_before_any_import(cli: Cli) -> None:
    result = cli("check")
    assert result.code == 0
    assert "warning store: no ledger imported yet" in result.out


def edit_contacts(folder: Path, edit: str) -> None:
    path = folder / "contacts.toml"
    text = path.read_text(encoding="utf-8")
    if edit == "drop 统计局":
        text = re.sub(r'\[\[unit\]\]\nname = "统计局"\n(?:[^\[].*\n)*', "", text)
    elif edit == "bad addresses":
        text = text.replace(
            'email = "hbj@example.org"', 'email = ["hbj@example", "ok@example.org"]'
        )
        text = text.replace('mobile = "13800000002"', 'mobile = "1234"')
        text = text.replace('name = "林业局"', 'name = "林业局"\nwebhook = "ftp://robot"')
    elif edit == "no contact":
        text = re.sub(r'(name = "民政局"\n(?:.*\n)*?)email = .*\nmobile = .*\n', r"\1", text)
    elif edit == "empty group":
        text = re.sub(
            r'(name = "有关企业"\n.*\n)members = \[\n(?:.*\n)*?\]\n', r"\1members = []\n", text
        )
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "code", "expected"),
    [
        ("drop 统计局", 1, ["error   unit 统计局: not in", "(tasks 21)"]),
        (
            "bad addresses",
            1,
            [
                "error   unit 环境保护局: invalid email 'hbj@example'",
                "error   unit 住房和城乡建设局: invalid mobile number '1234'",
                "error   unit 林业局: invalid webhook URL 'ftp://robot'",
            ],
        ),
        ("no contact", 0, ["warning unit 民政局: no contact (tasks 89)"]),
        (
            "empty group",
            0,
            [
                "warning group 有关企业: has no members",
                "warning unit 有关企业: group has no members",
            ],
        ),
    ],
)
def test_config_problems(
    cli: Cli,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    edit: str,
    code: int,
    expected: list[str],
) -> None:
    assert cli("import", str(SEED)).code == 0
    folder = config_copy(isolated_env)
    edit_contacts(folder, edit)
    monkeypatch.setenv("REMINDER_CONFIG", str(folder))
    result = cli("check")
    assert result.code == code, result.out
    for line in expected:
        assert line in result.out


def test_unreadable_deadline_is_a_warning(cli: Cli, isolated_env: Path) -> None:
    ledger = seed_with(isolated_env, "tbd.txt", lambda t: t.replace("\t6月30日\n", "\t待定\n", 1))
    result = cli("import", str(ledger))
    assert result.code == 0
    assert "unreadable deadlines: task 3: '待定'" in result.out
    check = cli("check")
    assert "warning task 3 (line 25): cannot read 完成时限 '待定'" in check.out
    assert check.code == 0


def test_invalid_address_is_kept_out_of_delivery() -> None:
    contacts = parse_contacts(
        '[[unit]]\nname = "甲局"\nemail = ["bad", "ok@example.org"]\nmobile = "13800000001"\n',
        "contacts.toml",
    )
    assert contacts.has_contact("甲局")
    assert [p.severity for p in contacts.problems] == ["error"]
    none_valid = parse_contacts('[[unit]]\nname = "乙局"\nemail = "bad"\n', "contacts.toml")
    assert not none_valid.has_contact("乙局")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("file", "source", "line"),
    [
        ("letter.md.j2", "{{ '{unit}'.format() }}", "template letter.md.j2:1: KeyError: 'unit'"),
        ("escalation.text.j2", "\n{{ [].pop() }}", "template escalation.text.j2:2: IndexError"),
        (
            "letter.sms.j2",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "template letter.sms.j2:1: took longer than 2 s to render",
        ),
        (
            "digest.subject.j2",
            "{{ 'x'.center(10**9) }}",
            "template digest.subject.j2:1: center: a width or size above 100000",
        ),
    ],
)
def test_a_template_error_of_any_kind_is_one_line(
    cli: Cli,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_gc_callbacks: None,
    file: str,
    source: str,
    line: str,
) -> None:
    assert cli("import", str(SEED)).code == 0
    folder = isolated_env / "templates"
    folder.mkdir()
    (folder / file).write_text(source, encoding="utf-8")
    monkeypatch.setenv("REMINDER_MESSAGES__TEMPLATES", str(folder))
    result = cli("check")
    assert result.code == 1, result.err
    assert "Traceback" not in result.out + result.err
    found = [text for text in result.out.splitlines() if text.startswith("error")]
    assert len(found) == 1, found
    assert found[0].startswith(f"error   templates: {line}")
