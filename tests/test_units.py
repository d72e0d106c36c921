"""Every unit oddity of the seed, with and without the bundled directory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reminder.contacts import Contacts
from reminder.ledger.model import Ledger, Role, UnitKind
from reminder.ledger.units import Directory, DirectoryEntry, parse_units

EMPTY = Directory()


def names(cell: str, directory: Directory) -> list[str]:
    return [unit.name for unit in parse_units(cell, directory)]


def test_first_unit_leads_and_the_rest_cooperate(contacts: Contacts) -> None:
    units = parse_units("住房和城乡建设局、发展和改革委员会、环境保护局", contacts.directory)
    assert [u.role for u in units] == [Role.LEAD, Role.COOPERATING, Role.COOPERATING]
    assert units[0].name == "住房和城乡建设局"


def test_splits_on_every_separator(contacts: Contacts) -> None:
    cell = "环境保护局、公安局，交通运输局,商务局；水利局;财政局"
    assert names(cell, contacts.directory) == [
        "环境保护局", "公安局", "交通运输局", "商务局", "水利局", "财政局",
    ]  # fmt: skip


def test_line_break_after_a_separator_is_not_a_name(contacts: Contacts) -> None:
    # task 5 of the seed
    cell = "发展和改革委员会、住房和城乡建设局、国土资源局、工业和信息化委员会、\n济源供电公司"
    assert names(cell, contacts.directory)[-1] == "济源供电公司"


def test_name_wrapped_over_two_lines_is_joined(contacts: Contacts) -> None:
    # task 46 of the seed: 工业和信息化 / 委员会
    cell = "工业和信息化\n委员会、\n发展和改革委员会"
    assert names(cell, contacts.directory) == ["工业和信息化委员会", "发展和改革委员会"]
    assert names(cell, EMPTY) == ["工业和信息化委员会", "发展和改革委员会"]


def test_line_break_between_complete_names_splits(contacts: Contacts) -> None:
    assert names("环境保护局\n公安局", contacts.directory) == ["环境保护局", "公安局"]
    assert names("环境保护局\n公安局", EMPTY) == ["环境保护局", "公安局"]


def test_parentheses_are_never_split() -> None:
    units = parse_units("各县（市、区）人民政府、工商行政管理局（燃煤散烧管控办公室）", EMPTY)
    assert [u.name for u in units] == [
        "县（市、区）人民政府",
        "工商行政管理局（燃煤散烧管控办公室）",
    ]
    assert units[0].kind is UnitKind.GROUP
    half_width = parse_units("各县(市、区)人民政府", EMPTY)
    assert [u.name for u in half_width] == ["县（市、区）人民政府"]


def test_aliases_are_canonicalised(contacts: Contacts) -> None:
    # task 20 of the seed spells 住房与城乡建设局
    units = parse_units("环境保护局、住房与城乡建设局", contacts.directory)
    assert units[1].name == "住房和城乡建设局"
    assert units[1].raw == "住房与城乡建设局"
    office = parse_units("工商行政管理局（燃煤散烧管控办公室）、财政局", contacts.directory)
    assert office[0].name == "工商行政管理局"


def test_glued_names_are_split_against_the_directory(contacts: Contacts) -> None:
    # task 40 of the seed: 商务局质量技术监督局
    assert names("环境保护局、商务局质量技术监督局、交通运输局", contacts.directory) == [
        "环境保护局", "商务局", "质量技术监督局", "交通运输局",
    ]  # fmt: skip


def test_repeats_are_dropped_keeping_the_first_role(contacts: Contacts) -> None:
    # task 40 of the seed lists 环境保护局 first and last
    cell = "环境保护局、商务局质量技术监督局、\n交通运输局、公安局、环境保护局"
    units = parse_units(cell, contacts.directory)
    assert [u.name for u in units].count("环境保护局") == 1
    assert units[0].name == "环境保护局"
    assert units[0].role is Role.LEAD


def test_enterprises_named_before_deng_qiye(contacts: Contacts) -> None:
    cell = (
        "环境保护局，各产业集聚（开发）区管委会、镇人民政府、街道办事处，联创化工、方升化学等企业"
    )
    for directory in (contacts.directory, EMPTY):
        units = {u.name: u.kind for u in parse_units(cell, directory)}
        assert units["联创化工"] is UnitKind.ENTERPRISE
        assert units["方升化学"] is UnitKind.ENTERPRISE
        assert units["环境保护局"] is UnitKind.UNIT


def test_enterprises_over_several_lines(contacts: Contacts) -> None:
    # task 48 of the seed
    cell = (
        "环境保护局，各产业集聚（开发）区管委会、镇人民政府、\n街道办事处，\n"
        "豫光金铅、\n金利金铅、\n万洋冶炼、\n欣欣实业等企业"
    )
    for directory in (contacts.directory, EMPTY):
        units = parse_units(cell, directory)
        enterprises = [u.name for u in units if u.kind is UnitKind.ENTERPRISE]
        assert enterprises == ["豫光金铅", "金利金铅", "万洋冶炼", "欣欣实业"]


def test_groups_are_kept_as_groups(contacts: Contacts) -> None:
    cell = "环境保护局，各产业集聚（开发）区管委会、镇人民政府、街道办事处，有关企业"
    for directory in (contacts.directory, EMPTY):
        kinds = [u.kind for u in parse_units(cell, directory)]
        assert kinds == [UnitKind.UNIT] + [UnitKind.GROUP] * 4
    related = parse_units("安全生产监督管理局、相关镇人民政府、街道办事处", contacts.directory)
    assert [u.name for u in related] == ["安全生产监督管理局", "镇人民政府", "街道办事处"]


def test_ji_xiangguan_names_a_second_group(contacts: Contacts) -> None:
    # task 17 of the seed
    units = parse_units("工商行政管理局（燃煤散烧管控办公室）及相关成员单位", contacts.directory)
    assert [(u.name, u.kind) for u in units] == [
        ("工商行政管理局", UnitKind.UNIT),
        ("燃煤散烧管控成员单位", UnitKind.GROUP),
    ]
    bare = parse_units("工商行政管理局（燃煤散烧管控办公室）及相关成员单位", EMPTY)
    assert bare[1].kind is UnitKind.GROUP


def test_unknown_names_are_kept_with_a_guessed_kind() -> None:
    units = parse_units("新设办公室、某某有限公司", EMPTY)
    assert [(u.name, u.kind) for u in units] == [
        ("新设办公室", UnitKind.UNIT),
        ("某某有限公司", UnitKind.ENTERPRISE),
    ]


def test_forced_role_for_separate_columns(contacts: Contacts) -> None:
    units = parse_units("环境保护局、公安局", contacts.directory, Role.LEAD)
    assert [u.role for u in units] == [Role.LEAD, Role.LEAD]


def test_empty_cell_has_no_units(contacts: Contacts) -> None:
    assert parse_units("", contacts.directory) == ()
    assert parse_units(" \n ", contacts.directory) == ()


def test_every_unit_of_the_seed_is_in_the_bundled_directory(
    seed_ledger: Ledger, contacts: Contacts
) -> None:
    unknown = {
        unit.name
        for task in seed_ledger.tasks
        for unit in task.units
        if contacts.directory.resolve(unit.name) is None
    }
    assert unknown == set()
    assert len({unit.name for task in seed_ledger.tasks for unit in task.units}) == 49


def test_segment_prefers_fewest_names() -> None:
    directory = Directory(
        (
            DirectoryEntry("商务局", UnitKind.UNIT),
            DirectoryEntry("质量技术监督局", UnitKind.UNIT),
            DirectoryEntry("质量技术", UnitKind.UNIT),
            DirectoryEntry("监督局", UnitKind.UNIT),
        )
    )
    found = directory.segment("商务局质量技术监督局")
    assert found is not None
    assert [entry.name for entry in found] == ["商务局", "质量技术监督局"]
    assert directory.segment("商务局") is None


unit_names = st.sampled_from(["环境保护局", "公安局", "交通运输局", "商务局", "水利局", "财政局"])


@given(
    st.lists(unit_names, min_size=1, max_size=8),
    st.lists(st.sampled_from(["、", "，", ",", "；", "、\n", "\n"]), min_size=8, max_size=8),
)
def test_any_list_of_known_names_reads_back_once_each(
    chosen: list[str], separators: list[str]
) -> None:
    directory = Directory(tuple(DirectoryEntry(n, UnitKind.UNIT) for n in set(chosen)))
    cell = "".join(name + sep for name, sep in zip(chosen, separators, strict=False)).rstrip(
        "、，,；\n"
    )
    units = parse_units(cell, directory)
    assert [u.name for u in units] == list(dict.fromkeys(chosen))
    assert [u.role for u in units][:1] == [Role.LEAD]
