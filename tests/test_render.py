"""Letter templates: every part on every channel, the wording of each kind and role, the
sandbox, and errors that say where."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import jinja2
import pytest

from reminder.app import App, parse_moment
from reminder.calendar import WorkCalendar
from reminder.commands.sending import deliver_due
from reminder.contacts import Contacts
from reminder.context import TaskFacts, report_context
from reminder.letters import LetterContext, LetterItem, build_letter
from reminder.loop import run_async
from reminder.policy import Kind
from reminder.render import PARTS, Renderer, TemplateProblem
from reminder.settings import OfficeSettings
from reminder.text import segments
from reminder.tick import run_tick
from tests.conftest import SEED, Cli

DAY = dt.date(2018, 10, 16)  # a Tuesday
TASK = TaskFacts(
    no=8,
    text="煤电热电联产机组、燃煤燃气集中供热锅炉要满足国家和我省环保排放标准，并安装大气污染源自动监控设施<script>alert(1)</script>。",
    section="一、加快调整能源消费结构",
    deadline="9月30日",
    due=dt.date(2018, 9, 30),
    start=None,
    action=None,
    kind="date",
    units=(("环境保护局", "lead"), ("公安局", "cooperating"), ("交通运输局", "cooperating")),
)
ALONE = TaskFacts(
    no=9,
    text="独自承担的任务。",
    section="一、加快调整能源消费结构",
    deadline="4月1日—\n12月31日",
    due=dt.date(2018, 12, 31),
    start=dt.date(2018, 4, 1),
    action=None,
    kind="window",
    units=(("环境保护局", "lead"),),
)
# one item of each kind, as a letter of 2018-10-16 carries it
EVERY_KIND: list[tuple[Kind, str]] = [
    (Kind.OVERDUE, "2018-09-30"),
    (Kind.DUE_TODAY, "2018-10-16"),
    (Kind.UPCOMING, "2018-10-19"),
    (Kind.WINDOW_START, "2018-10-19"),
    (Kind.PROGRESS, "2018-10-25"),
    (Kind.SUMMARY, "2018-12-10"),
]


def letter(
    contacts: Contacts,
    items: list[tuple[Kind, str]],
    unit: str = "环境保护局",
    *,
    task: TaskFacts = TASK,
    seq: int = 1,
    agenda: list[dict[str, Any]] | None = None,
    reminded: int = 0,
) -> dict[str, Any]:
    role = next((r for name, r in task.units if name == unit), "lead")
    context = LetterContext(
        day=DAY,
        title="济源市2018年大气污染防治攻坚战任务分解台账",
        year=2018,
        office=OfficeSettings(),
        contacts=contacts,
        calendar=WorkCalendar(),
        reminded={(task.no, unit): reminded},
    )
    found = [
        LetterItem(f"k{n}", kind, unit, role, None, {"milestone": day}, task)
        for n, (kind, day) in enumerate(items)
    ]
    return build_letter(context, unit, found, seq, agenda)


def values(payload: dict[str, Any], channel: str = "email") -> dict[str, Any]:
    found = report_context(
        kind="letter", recipient=payload["unit"], payload=payload, settings=OfficeSettings()
    )
    return {**found, "channel": channel}


def render(payload: dict[str, Any], part: str, channel: str = "email") -> str:
    return Renderer().part("letter", part, values(payload, channel))


@pytest.mark.parametrize("channel", ["email", "sms", "wecom", "dingtalk"])
@pytest.mark.parametrize("unit", ["环境保护局", "公安局"])
def test_every_part_renders_on_every_channel(contacts: Contacts, channel: str, unit: str) -> None:
    payload = letter(contacts, EVERY_KIND, unit)
    rendered = Renderer().render("letter", values(payload, channel), PARTS)
    assert (
        rendered.subject
        == "【督办提醒】你单位今日待办6项（逾期1项、今日到期1项、即将到期1项、开始实施1项、进展报送2项）"
    )
    assert "\n" not in rendered.subject
    assert TASK.text[:10] in rendered.text
    assert "<script>" not in rendered.html  # escaped in HTML …
    assert "&lt;script&gt;" in rendered.html
    assert "<script>" in rendered.text  # … but not in plain text
    assert rendered.sms and rendered.md
    assert "<html" in rendered.html and "style=" in rendered.html
    assert "http" not in rendered.html.replace("http-equiv", "")  # no external images or scripts


def test_the_subject_counts_what_the_body_lists(contacts: Contacts) -> None:
    payload = letter(contacts, [*EVERY_KIND, (Kind.OVERDUE, "2018-09-28")])
    subject, text = render(payload, "subject"), render(payload, "text")
    counts = {
        label: int(n)
        for label, n in re.findall(r"(逾期|今日到期|即将到期|开始实施|进展报送)(\d+)项", subject)
    }
    listed = {
        label: int(n)
        for label, n in re.findall(
            r"^[一二三四五六]、(逾期事项|今日到期|即将到期|开始实施|进展报送)（(\d+)项）$",
            text,
            re.M,
        )
    }
    assert counts == {label.removesuffix("事项"): n for label, n in listed.items()}
    assert sum(counts.values()) == int(re.search(r"待办(\d+)项", subject).group(1)) == 7  # type: ignore[union-attr]
    numbered = re.findall(r"^\d+\. 大气攻坚〔2018〕第8项", text, re.M)
    assert len(numbered) == 7


def test_a_letter_says_where_it_comes_from_and_how_to_answer(contacts: Contacts) -> None:
    text = render(letter(contacts, [(Kind.OVERDUE, "2018-09-30")]), "text")
    assert "根据《济源市2018年大气污染防治攻坚战任务分解台账》" in text  # 依据
    assert "大气攻坚〔2018〕第8项　一、加快调整能源消费结构" in text  # 编号, section
    assert "请及时将办理情况报济源市攻坚办，也可直接回复本邮件。" in text
    assert "（联系人：攻坚办督办联络员，电话：0391-0000000）" in text
    cooperating = render(letter(contacts, [(Kind.OVERDUE, "2018-09-30")], "公安局"), "text")
    assert "（联系人：攻坚办督办联络员，电话：0391-0000000）" in cooperating
    assert text.rstrip().endswith("本通知由督办提醒系统发出。")
    assert (
        "济源市环境污染防治攻坚战领导小组办公室\n2018年10月16日（星期二）" in text
    )  # dated the day it is sent
    assert "请回复本邮件" not in text  # … only "也可直接回复本邮件" where replies reach the office
    sms = render(letter(contacts, [(Kind.OVERDUE, "2018-09-30")]), "sms", "sms")
    assert "回复" not in sms


def test_lead_and_cooperating_wording_differ(contacts: Contacts) -> None:
    lead = render(letter(contacts, [(Kind.OVERDUE, "2018-09-30")]), "text")
    assert "牵头单位：环境保护局（你单位）；配合单位：公安局、交通运输局" in lead
    assert "请立即组织办结并报送办结情况" in lead
    assert "报送对象" not in lead
    cooperating = render(letter(contacts, [(Kind.OVERDUE, "2018-09-30")], "公安局"), "text")
    assert "牵头单位：环境保护局；配合单位：公安局（你单位）、交通运输局" in cooperating
    assert "请抓紧完成你单位承担的工作，并将完成情况报牵头单位。" in cooperating
    assert "报送对象：牵头单位环境保护局（联系人：环保局联络员，电话：13800000001）" in cooperating
    assert "请立即组织办结" not in cooperating
    sms = render(letter(contacts, [(Kind.OVERDUE, "2018-09-30")], "公安局"), "sms", "sms")
    assert "办结" not in sms  # a cooperating unit is not told to finish the task


def test_a_task_of_one_unit_names_no_cooperating_units(contacts: Contacts) -> None:
    text = render(letter(contacts, [(Kind.UPCOMING, "2018-12-31")], task=ALONE), "text")
    assert "牵头单位：环境保护局（你单位）\n" in text
    assert "配合" not in text
    assert "完成时限：4月1日至12月31日（2018年12月31日）" in text  # as written, tidied


def test_lateness_and_days_left_as_the_unit_reads_them(contacts: Contacts) -> None:
    text = render(letter(contacts, EVERY_KIND, reminded=2), "text")
    # 2018-09-30 (a make-up working Sunday) to Tuesday 10-16: 16 days, 07-10-08 … 10-16
    assert "已逾期16天（7个工作日），此前已催办2次。" in text
    assert "今日到期。" in text
    assert "10月19日（星期五）到期，还有3天。" in text
    assert "10月19日（星期五）开始实施，还有3天。" in text
    assert "请报送10月工作进展（已开展的工作、存在的问题、下一步打算），10月25日前报送。" in text
    assert "报送年度工作总结" in text


def test_due_on_a_day_off_is_due_on_the_last_working_day(contacts: Contacts) -> None:
    context = LetterContext(
        day=dt.date(2018, 12, 29),
        title="台账",
        year=2018,
        office=OfficeSettings(),
        contacts=contacts,
        calendar=WorkCalendar(),
        reminded={},
    )
    item = LetterItem(
        "k", Kind.DUE_TODAY, "环境保护局", "lead", None, {"milestone": "2018-12-31"}, ALONE
    )
    text = render(build_letter(context, "环境保护局", [item], 1), "text")
    assert "12月31日（星期一）为节假日，今日为到期前最后一个工作日。请于今日办结" in text
    assert "还有2天" not in text


def test_a_second_letter_the_same_day_says_it_adds_to_the_first(contacts: Contacts) -> None:
    payload = letter(contacts, [(Kind.UPCOMING, "2018-10-19")], seq=2)
    assert render(payload, "subject") == "【督办提醒·补充】你单位今日新增待办1项（即将到期1项）"
    assert "今日已向你单位发送督办通知，现补充通知以下事项" in render(payload, "text")
    assert "督办通知（补充）" in render(payload, "html")


def test_the_weeks_agenda_lists_the_other_open_tasks(contacts: Contacts) -> None:
    agenda = [
        {"no": 12, "number": "大气攻坚〔2018〕第12项", "text": "一项任务", "role": "lead",
         "role_label": "牵头", "deadline": "10月31日", "next": "2018-10-31", "light": "green",
         "standing": False, "lead": "环境保护局"},
        {"no": 13, "number": "大气攻坚〔2018〕第13项", "text": "全年任务", "role": "cooperating",
         "role_label": "配合", "deadline": "全年", "next": None, "light": "green",
         "standing": True, "lead": "住房和城乡建设局"},
    ]  # fmt: skip
    with_items = render(letter(contacts, [(Kind.OVERDUE, "2018-09-30")], agenda=agenda), "text")
    assert "二、本周其他在办任务（2项）" in with_items
    assert "你单位牵头；完成时限：10月31日；正常推进；下一时间节点：2018年10月31日" in with_items
    assert "另有常态化工作1项（全年等，按月报送进展）：第13项。" in with_items
    alone = letter(contacts, [], agenda=agenda)
    assert render(alone, "subject") == "【督办提醒】本周工作安排：你单位在办任务2项"
    assert "一、本周在办任务（2项）" in render(alone, "text")


def test_robot_posts_use_each_services_markup_and_at_the_contact(contacts: Contacts) -> None:
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    payload["mention"] = {"mobile": "13800000001", "wecom_userid": "HuanBao"}
    wecom = render(payload, "md", "wecom")
    dingtalk = render(payload, "md", "dingtalk")
    assert '<font color="warning">' in wecom and "<@HuanBao>" in wecom
    assert "<font" not in dingtalk and "<@" not in dingtalk
    assert dingtalk.rstrip().endswith("@13800000001")
    assert "已逾期16天" in dingtalk
    # markdown joins lines without a blank one between: the day's line is a paragraph
    assert "\n\n**逾期事项（1项）**\n- 第8项" in dingtalk
    # the signature is a quote; the mention stands apart from it (a line right after a
    # quote line would be read as part of the quote)
    for post, mention in ((dingtalk, "@13800000001"), (wecom, "<@HuanBao>")):
        quote = next(line for line in post.splitlines() if line.startswith("> "))
        assert (
            quote
            == "> 济源市环境污染防治攻坚战领导小组办公室（联系人：攻坚办督办联络员，电话：0391-0000000）"
        )
        assert f"{quote}\n\n{mention}" in post


def test_an_sms_gives_the_counts_the_nearest_date_and_the_office(contacts: Contacts) -> None:
    sms = render(
        letter(contacts, [(Kind.DUE_TODAY, "2018-10-16"), (Kind.OVERDUE, "2018-09-30")]),
        "sms",
        "sms",
    )
    assert sms == (
        "环境保护局：今日督办事项2项（逾期1项、今日到期1项），最近时限10月16日（第8项）。"
        "详见督办通知邮件，咨询济源市攻坚办0391-0000000。"
    )
    assert segments("【济源市攻坚办】" + sms) <= 2


def test_a_deployment_overrides_one_file(tmp_path: Path, contacts: Contacts) -> None:
    (tmp_path / "letter.sms.j2").write_text("{{ unit }}：{{ total }}项", encoding="utf-8")
    renderer = Renderer(tmp_path)
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    assert renderer.part("letter", "sms", values(payload, "sms")) == "环境保护局：1项"
    assert "督办提醒" in renderer.part("letter", "subject", values(payload))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ office.nope }}", "letter.sms.j2:1: 'dict object' has no attribute 'nope'"),
        ("ok\n{{ missing }}", "letter.sms.j2:2: 'missing' is undefined"),
        ("{% if %}", "letter.sms.j2:1: Expected an expression"),
        ("{{ unit.__class__.__mro__ }}", "letter.sms.j2:1:"),
    ],
)
def test_template_errors_name_file_and_line(
    tmp_path: Path, contacts: Contacts, source: str, message: str
) -> None:
    (tmp_path / "letter.sms.j2").write_text(source, encoding="utf-8")
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    with pytest.raises(TemplateProblem) as caught:
        Renderer(tmp_path).part("letter", "sms", values(payload, "sms"))
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
    (tmp_path / "letter.sms.j2").write_text(source, encoding="utf-8")
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    with pytest.raises(TemplateProblem):
        Renderer(tmp_path).part("letter", "sms", values(payload, "sms"))


def test_check_renders_every_template_for_every_task(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("import", str(SEED)).code == 0
    assert cli("check").code == 0
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "letter.md.j2").write_text(
        '{% for g in groups %}{% for t in g["items"] %}{% if t.no > 98 %}{{ t.oops }}'
        "{% endif %}{% endfor %}{% endfor %}",
        encoding="utf-8",
    )
    monkeypatch.setenv("REMINDER_MESSAGES__TEMPLATES", str(folder))
    result = cli("check")
    assert result.code == 1
    assert (
        "error   templates: template letter.md.j2:1: 'dict object' has no attribute 'oops' (task 99)"
        in result.out
    )


# Any error of a template fails only that template's messages, with file:line.


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ '{unit}'.format() }}", "letter.sms.j2:1: KeyError: 'unit'"),
        ("ok\n{{ [].pop() }}", "letter.sms.j2:2: IndexError: pop from empty list"),
        (
            "{% macro f() %}{{ f() }}{% endmacro %}\n{{ f() }}",
            "letter.sms.j2:1: too deep a recursion",
        ),
        ("{{ 1 // 0 }}", "letter.sms.j2:1: ZeroDivisionError: integer division or modulo by zero"),
        ("{{ 1 + 'a' }}", "letter.sms.j2:1: TypeError: unsupported operand"),
        ("{{ '%d' % 'x' }}", "letter.sms.j2:1: TypeError: %d format"),
        ("{{ unit.__class__ }}", "letter.sms.j2:1: access to attribute '__class__'"),
        ("{{ nope }}", "letter.sms.j2:1: 'nope' is undefined"),
    ],
)
def test_an_error_of_any_type_is_a_template_problem(
    tmp_path: Path, contacts: Contacts, source: str, message: str
) -> None:
    (tmp_path / "letter.sms.j2").write_text(source, encoding="utf-8")
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    renderer = Renderer(tmp_path)
    with pytest.raises(TemplateProblem) as caught:
        renderer.part("letter", "sms", values(payload, "sms"))
    assert message in str(caught.value)
    # the other templates of the same renderer are not touched
    assert "督办提醒" in renderer.part("letter", "subject", values(payload))


def test_a_broken_template_fails_only_its_messages_in_a_run(
    cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template that fails when the messages are sent (start-up refuses one that fails
    on the ledger beforehand, so the tick and the delivery run here as `run --once` runs
    them, without that check): only its messages fail."""
    folder = isolated_env / "templates"
    folder.mkdir()
    (folder / "letter.sms.j2").write_text("{{ '{unit}'.format() }}", encoding="utf-8")
    monkeypatch.setenv("REMINDER_MESSAGES__TEMPLATES", str(folder))
    assert cli("import", str(SEED)).code == 0
    app = App()
    moment = parse_moment(app, "2018-01-31 09:00", "--at")
    run_tick(app.store, app.planning, app.config.settings, moment)
    run_async(deliver_due(app, moment))
    app.store.dispose()
    with sqlite3.connect(isolated_env / "ledger.db") as con:
        rows = con.execute("SELECT channel, status, last_error FROM outbox").fetchall()
    sms = [row for row in rows if row[0] == "sms"]
    others = [row for row in rows if row[0] != "sms"]
    assert len(sms) == 3  # task 1 is due today
    assert {(status, error) for _, status, error in sms} == {
        ("dead", "template letter.sms.j2:1: KeyError: 'unit'")
    }
    assert len(others) > 50
    assert {status for _, status, _ in others} == {"sent"}


# The render budget: time, output and what a template may build.

ATTACKS = [
    "{{ lipsum(10**6) }}",
    "{{ 'x'.center(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x'.rjust(10**9) }}",
    "{{ 'x'.zfill(10**9) }}",
    "{{ ('\t' * 100000).expandtabs(100000) }}",
    "{{ '%*d' % (10**9, 1) }}",
    "{{ '%1000000000s' % 'x' }}",
    "{{ '%.1000000000f' % 1.5 }}",
    "{{ 'x\ny' | indent(10**9) }}",
    "{{ ('x\n' * 50000) | indent('y' * 100000) }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ '{:{}}'.format(1, 10**9) }}",
    "{{ '{x:>1000000000}'.format_map({'x': 1}) }}",
    "{{ '%1000000000d' | format(1) }}",
    "{{ 'x' | center(10**9) }}",
    "{{ 'x' * 10**9 }}",
    "{{ 9 ** 999999999 }}",
    "{{ ['x' * 100000] * 100000 }}",
    "{{ ('x' * 100000).join('y' * 100000) }}",
    "{{ ('y' * 100000) | join('x' * 100000) }}",
    "{{ ('x' * 100000).replace('', 'y' * 100000) }}",
    "{{ ('x' * 100000) | replace('', 'y' * 100000) }}",
    "{{ ('x' * 100000).translate({120: 'y' * 100000}) }}",
    "{{ ('x ' * 50000) | wordwrap(1, wrapstring='y' * 100000) }}",
    "{{ [1] | batch(10**9, 'x') | list }}",
    "{{ 1 | tojson(indent=10**9) }}",
    "{{ dict.fromkeys(range(100000), 'x' * 100000) }}",
    "{{ range(100000) | map('string') | map('center', 100000) | list | length }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}",
    "{% set ns = namespace(s='x' * 100000) %}{% for i in range(40) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set l = [1] %}{% for i in range(100) %}{% set _ = l.extend(l) %}{% endfor %}",
    "{% set l = [] %}{% for i in range(100000) %}{% set _ = l.append('x' * 100000 ~ i) %}"
    "{% endfor %}",
    "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "{% for i in range(100000) %}{{ ('x' * 100000) ~ i }}{% endfor %}",
    "{% macro m() %}{% for i in range(100000) %}{{ ('x' * 100000) ~ i }}{% endfor %}"
    "{% endmacro %}{{ m() | length }}",
    "{% set s %}{% for i in range(100000) %}{{ ('x' * 100000) ~ i }}{% endfor %}{% endset %}",
    "{% filter upper %}{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}{% endfilter %}",
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("source", ATTACKS)
def test_the_budget_refuses_what_would_take_memory(
    tmp_path: Path, contacts: Contacts, source: str
) -> None:
    """Refused before the memory is taken: at most a few times the 1,000,000 characters
    of a value, never the gigabytes the template asks for."""
    (tmp_path / "letter.sms.j2").write_text(source, encoding="utf-8")
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    renderer = Renderer(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(TemplateProblem) as caught:
            renderer.part("letter", "sms", values(payload, "sms"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value).startswith("template letter.sms.j2")
    assert peak < 60_000_000, f"{peak:,} bytes"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "\n{{ f(60) }}",
        "{% set l = range(100000) | list %}{% for i in l %}{{ l | sort | first }}{% endfor %}",
    ],
)
def test_the_budget_stops_a_render_that_runs_too_long(
    tmp_path: Path, contacts: Contacts, source: str, no_gc_callbacks: None
) -> None:
    (tmp_path / "letter.sms.j2").write_text(source, encoding="utf-8")
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    renderer = Renderer(tmp_path, seconds=0.5)
    with pytest.raises(TemplateProblem) as caught:
        renderer.part("letter", "sms", values(payload, "sms"))
    assert re.fullmatch(
        r"template letter\.sms\.j2:[12]: took longer than 0\.5 s to render", str(caught.value)
    )
    # not run again by this renderer: the same problem at once
    with pytest.raises(TemplateProblem) as again:
        renderer.part("letter", "sms", values(payload, "sms"))
    assert again.value.message == caught.value.message
    # the other templates render, and nothing is left to interrupt them later
    assert "督办提醒" in renderer.part("letter", "subject", values(payload))
    assert renderer.part("letter", "text", values(payload))


def test_a_bundled_template_importing_an_overridden_one_is_counted(
    tmp_path: Path, contacts: Contacts
) -> None:
    (tmp_path / "_letter.j2").write_text(
        "{% macro who(u) %}{{ 'x'.center(10**9) }}{% endmacro %}", encoding="utf-8"
    )
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    with pytest.raises(TemplateProblem) as caught:
        Renderer(tmp_path).part("letter", "md", values(payload, "wecom"))
    assert "center: a width or size above 100000" in str(caught.value)


def test_a_render_within_the_budget_is_unchanged(tmp_path: Path, contacts: Contacts) -> None:
    (tmp_path / "letter.sms.j2").write_text(
        "{% set ns = namespace(n=0) %}{% for i in range(1000) %}{% set ns.n = ns.n + i %}"
        "{% endfor %}{{ ns.n }} {{ 'x'.center(5) }}|{{ '%5d' % 42 }}|{{ '{:>4}'.format(7) }}"
        "|{{ ['a', 'b'] | join(', ') }}|{{ 'a\nb' | indent(2) }}|{{ lipsum(1, False, 3, 4)"
        " | wordcount }}",
        encoding="utf-8",
    )
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    text = Renderer(tmp_path).part("letter", "sms", values(payload, "sms"))
    assert text == "499500   x  |   42|   7|a, b|a\n  b|3"


def test_the_jinja2_internals_render_relies_on() -> None:
    """render.py renders with ``Template.root_render_func`` and ``new_context(shared=True)``
    (bench/render.py: the public ``Template.generate`` costs about 6 % more a message)
    and reads lines with ``get_corresponding_lineno``; the sandbox replaces
    ``Environment.concat``, which the generated code reads for every captured block.
    Checked against the versions pyproject.toml allows: a new Jinja2 fails here first."""
    version = tuple(int(n) for n in jinja2.__version__.split(".")[:2])
    assert (3, 1) <= version < (4, 0)
    renderer = Renderer()
    template = renderer.bundled.get_template("letter.subject.j2")
    source = renderer.env.compile("{% macro m() %}x{% endmacro %}{{ m() }}", raw=True)
    assert "concat = environment.concat" in source
    context = {"kind": "letter", "unit": "u", "total": 1, "office": {}}
    with pytest.raises(Exception):  # noqa: B017, PT011 - any error: the context is partial
        template.render(context)
    env = renderer.bundled
    plain = env.from_string("{{ a }}-{{ b }}{% set c = 3 %}{{ c }}")
    values = {**env.globals, "a": 1, "b": 2}
    shared = plain.new_context(values, shared=True)
    assert "".join(plain.root_render_func(shared)) == plain.render(a=1, b=2) == "1-23"
    assert "c" not in values  # the template's own variables stay in its context
    assert plain.get_corresponding_lineno(1) == 1


def test_the_override_folder_is_read_once(tmp_path: Path, contacts: Contacts) -> None:
    """What `check` and start-up rendered is what is sent: a file edited on disk after the
    renderer was made (without a reload) is not picked up, here or in render workers,
    which get the same snapshot (``Renderer.sources``)."""
    (tmp_path / "letter.subject.j2").write_text("旧标题", encoding="utf-8")
    renderer = Renderer(tmp_path)
    payload = letter(contacts, [(Kind.OVERDUE, "2018-09-30")])
    assert renderer.part("letter", "subject", values(payload)) == "旧标题"
    (tmp_path / "letter.subject.j2").write_text("{{ broken", encoding="utf-8")
    assert renderer.part("letter", "subject", values(payload)) == "旧标题"
    assert renderer.sources == {"letter.subject.j2": "旧标题"}
    worker = Renderer(renderer.sources)
    assert worker.part("letter", "subject", values(payload)) == "旧标题"


@pytest.mark.parametrize("channel", ["email", "sms", "wecom"])
def test_a_letter_queued_by_the_previous_version_still_renders(
    contacts: Contacts, channel: str
) -> None:
    """A payload enqueued before letters were capped (no count, more, listed or
    agenda_count: still pending or retrying in the outbox at the upgrade) renders as it
    did, instead of going dead on the templates' strict undefined values."""
    agenda = [
        {"no": 2, "number": "第2项", "text": "任务", "role_label": "牵头", "deadline": "全年",
         "light": "green", "standing": True, "next": None}
    ]  # fmt: skip
    payload = letter(contacts, EVERY_KIND, agenda=agenda)
    old = {k: v for k, v in payload.items() if k not in ("listed", "agenda_count")}
    old["groups"] = [
        {k: v for k, v in group.items() if k not in ("count", "more")} for group in old["groups"]
    ]
    rendered = Renderer().render("letter", values(old, channel), PARTS)
    now = Renderer().render("letter", values(payload, channel), PARTS)
    assert (rendered.text, rendered.html, rendered.sms, rendered.md) == (
        now.text,
        now.html,
        now.sms,
        now.md,
    )
