"""Templates: every kind and role renders every part; the sandbox holds; errors say where."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from reminder.contacts import Contacts
from reminder.messages import TaskFacts, context
from reminder.render import PARTS, Renderer, TemplateProblem
from reminder.settings import MessagesSettings
from tests.conftest import SEED, Cli

TASK = TaskFacts(
    no=8,
    text="煤电热电联产机组、燃煤燃气集中供热锅炉要满足国家和我省环保排放标准，并安装大气污染源自动监控设施<script>alert(1)</script>。",
    section="加快调整能源消费结构",
    deadline="9月30日",
    due=dt.date(2018, 9, 30),
    start=None,
    action=None,
    kind="date",
    units=(("环境保护局", "lead"), ("公安局", "cooperating"), ("交通运输局", "cooperating")),
)
KINDS = ["upcoming", "due_today", "window_start", "overdue", "escalation", "progress"]


def values(contacts: Contacts, kind: str, role: str, **payload: Any) -> dict[str, Any]:
    unit = "环境保护局" if role == "lead" else "公安局"
    return context(
        kind=kind,
        unit=unit,
        role=role,
        recipient=unit,
        task=TASK,
        payload={
            "day": "2018-10-16",
            "milestone": "2018-09-30",
            "days_left": 3,
            "overdue_days": 7,
            "escalated": True,
        }
        | payload,
        contacts=contacts,
        settings=MessagesSettings(),
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ["lead", "cooperating"])
def test_every_kind_and_role_renders_every_part(contacts: Contacts, kind: str, role: str) -> None:
    rendered = Renderer().render(kind, values(contacts, kind, role), PARTS)
    assert "第8项" in rendered.subject or "8" in rendered.subject
    assert "\n" not in rendered.subject
    assert TASK.text[:10] in rendered.text
    assert "<script>" not in rendered.html  # escaped in HTML …
    assert "&lt;script&gt;" in rendered.html
    assert "<script>" in rendered.text  # … but not in plain text
    assert rendered.sms and rendered.md
    assert "<html" in rendered.html and "style=" in rendered.html
    assert "http" not in rendered.html.replace("http-equiv", "")  # no external images or scripts


def test_lead_and_cooperating_wording_differ(contacts: Contacts) -> None:
    renderer = Renderer()
    lead = renderer.part("overdue", "text", values(contacts, "overdue", "lead"))
    cooperating = renderer.part("overdue", "text", values(contacts, "overdue", "cooperating"))
    assert "牵头单位承担的第8项任务" in lead
    assert "请立即组织完成" in lead
    assert "配合单位承担的第8项任务" in cooperating
    assert "向牵头单位报送" in cooperating


def test_messages_name_the_days_and_the_deadline(contacts: Contacts) -> None:
    renderer = Renderer()
    upcoming = renderer.part("upcoming", "text", values(contacts, "upcoming", "lead", days_left=3))
    assert "2018年9月30日（星期日）到期，距今还有3天" in upcoming
    overdue = renderer.part("overdue", "subject", values(contacts, "overdue", "lead"))
    assert overdue.startswith("【逾期提醒】第8项任务已逾期7个工作日")
    escalated = renderer.part("overdue", "text", values(contacts, "overdue", "lead"))
    assert "本提醒已抄送督查部门" in escalated


def test_a_deployment_overrides_one_file(tmp_path: Path, contacts: Contacts) -> None:
    (tmp_path / "overdue.sms.j2").write_text(
        "{{ unit }}：第{{ task.no }}项逾期了", encoding="utf-8"
    )
    renderer = Renderer(tmp_path)
    assert (
        renderer.part("overdue", "sms", values(contacts, "overdue", "lead"))
        == "环境保护局：第8项逾期了"
    )
    assert "逾期提醒" in renderer.part("overdue", "subject", values(contacts, "overdue", "lead"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ task.nope }}", "overdue.sms.j2:1: 'dict object' has no attribute 'nope'"),
        ("ok\n{{ missing }}", "overdue.sms.j2:2: 'missing' is undefined"),
        ("{% if %}", "overdue.sms.j2:1: Expected an expression"),
        ("{{ unit.__class__.__mro__ }}", "overdue.sms.j2:1:"),
    ],
)
def test_template_errors_name_file_and_line(
    tmp_path: Path, contacts: Contacts, source: str, message: str
) -> None:
    (tmp_path / "overdue.sms.j2").write_text(source, encoding="utf-8")
    with pytest.raises(TemplateProblem) as caught:
        Renderer(tmp_path).part("overdue", "sms", values(contacts, "overdue", "lead"))
    assert message in str(caught.value)


@pytest.mark.timeout(2)
@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ 9 ** 999999999 }}",
        "{{ [1] * 10**9 }}",
        "{% for i in range(10**9) %}{% endfor %}",
    ],
)
def test_the_sandbox_refuses_huge_work_at_once(
    tmp_path: Path, contacts: Contacts, source: str
) -> None:
    (tmp_path / "overdue.sms.j2").write_text(source, encoding="utf-8")
    with pytest.raises(TemplateProblem):
        Renderer(tmp_path).part("overdue", "sms", values(contacts, "overdue", "lead"))


def test_check_renders_every_template_for_every_task(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    assert cli("check").code == 0
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "progress.md.j2").write_text(
        "{% if task.no > 98 %}{{ task.oops }}{% endif %}", encoding="utf-8"
    )
    monkeypatch.setenv("REMINDER_MESSAGES__TEMPLATES", str(folder))
    result = cli("check")
    assert result.code == 1
    assert (
        "error   templates: template progress.md.j2:1: 'dict object' has no attribute 'oops' (task 99)"
        in result.out
    )
