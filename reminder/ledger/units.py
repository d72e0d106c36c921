"""Reading the 责任单位 cell: raw text → canonical ``UnitRef`` list, lead first.

Pure and I/O-free; what it knows about unit names comes from a ``Directory`` (built
from contacts.toml). The algorithm:

1. Normalise each line (half-width parentheses to full-width, spaces out) and join the
   lines of the cell. A line break with no separator next to it is a wrapped name
   (工业和信息化 / 委员会) unless the directory knows both halves and not the whole,
   or the left half already ends like a unit (…局, …公司) and the whole is unknown.
2. Cut into clauses at ``，,；;`` and into names at ``、``, never inside parentheses
   (各县（市、区）); ``X及相关Y`` is two names.
3. Strip a group qualifier (各, 相关, 有关), and an enterprise marker (``豫港焦化等企业``:
   it and the unknown names before it in its clause are enterprises).
4. Resolve each name through the directory's names and aliases; a name the directory does
   not know but can cut into known names is glued (商务局质量技术监督局). Unknown names
   are kept, with a kind guessed from their shape, and reported by ``check``.
5. Drop repeats; the first unit is the lead, the others cooperate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from reminder.ledger.model import Role, UnitKind, UnitRef

_CLAUSE_SEPARATORS = "，,；;"
_NAME_SEPARATORS = "、"
_SEPARATORS = _CLAUSE_SEPARATORS + _NAME_SEPARATORS
_QUALIFIER = re.compile(r"^(?:各相关|各有关|各|相关|有关)")
_ENTERPRISE_MARKER = re.compile(r"等(?:企业|公司|单位)$")
# the endings of a complete unit name; a line that ends otherwise continues on the next
_UNIT_ENDING = re.compile(
    r"(?:局|委员会|委|办公室|办|室|公司|政府|办事处|管委会|中心|社|院|所|站|队|部|厂|集团|"
    r"企业|单位|会|处|科|组|镇|街道|区)$"
)
_GENERIC_GROUPS = {"镇人民政府", "街道办事处", "乡镇人民政府", "乡镇", "管委会", "企业", "成员单位"}


def normalise_name(name: str) -> str:
    """Spelling used for lookups: full-width parentheses, no whitespace."""
    return re.sub(r"\s+", "", name).replace("(", "（").replace(")", "）")


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    name: str
    kind: UnitKind
    aliases: tuple[str, ...] = ()
    members: tuple[str, ...] = ()  # for groups: the member units it expands to


@dataclass(slots=True)
class Directory:
    """Every unit name a deployment knows, with its aliases; read-only once built."""

    entries: tuple[DirectoryEntry, ...] = ()
    _index: dict[str, DirectoryEntry] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            for key in (entry.name, *entry.aliases):
                self._index.setdefault(normalise_name(key), entry)

    def resolve(self, name: str) -> DirectoryEntry | None:
        return self._index.get(normalise_name(name))

    def knows(self, name: str) -> bool:
        return normalise_name(name) in self._index

    def segment(self, text: str) -> list[DirectoryEntry] | None:
        """Cut ``text`` into two or more known names (glued cells); None if it cannot be."""
        text = normalise_name(text)
        # best[i]: the fewest known names that spell text[:i]
        best: list[list[DirectoryEntry] | None] = [[]] + [None] * len(text)
        for end in range(1, len(text) + 1):
            for start in range(end):
                prefix = best[start]
                entry = self._index.get(text[start:end])
                if prefix is None or entry is None:
                    continue
                current = best[end]
                if current is None or len(prefix) + 1 < len(current):
                    best[end] = [*prefix, entry]
        found = best[len(text)]
        return found if found is not None and len(found) > 1 else None


def _split_outside_parentheses(text: str, separators: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char in "（":
            depth += 1
        elif char in "）":
            depth = max(0, depth - 1)
        if char in separators and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _join_lines(cell: str, directory: Directory) -> str:
    """Step 1: one line per cell, with a separator where a line break separated names."""
    lines = [normalise_name(line) for line in re.split(r"[\r\n\s]+", cell)]
    text = ""
    for line in filter(None, lines):
        if not text or text[-1] in _SEPARATORS or line[0] in _SEPARATORS:
            text += line
            continue
        left = _split_outside_parentheses(text, _SEPARATORS)[-1]
        right = _split_outside_parentheses(line, _SEPARATORS)[0]
        joined_known = directory.knows(left + right) or directory.knows(
            _QUALIFIER.sub("", left + right)
        )
        both_known = directory.knows(left) and directory.knows(right)
        wrapped = joined_known or (not both_known and not _UNIT_ENDING.search(left))
        text += line if wrapped else "、" + line
    return text


def _guess_kind(name: str, qualified: bool) -> UnitKind:
    if qualified or name in _GENERIC_GROUPS or name.endswith("成员单位"):
        return UnitKind.GROUP
    if re.search(r"(?:公司|集团|厂)$", name):
        return UnitKind.ENTERPRISE
    return UnitKind.UNIT


@dataclass(slots=True)
class _Name:
    raw: str
    clause: int
    name: str = ""
    kind: UnitKind = UnitKind.UNIT
    known: bool = False
    enterprise_marker: bool = False


def _names(cell: str, directory: Directory) -> list[_Name]:
    """Steps 1–3: the names of a cell as written, with clause numbers and markers."""
    names: list[_Name] = []
    for clause_no, clause in enumerate(
        _split_outside_parentheses(_join_lines(cell, directory), _CLAUSE_SEPARATORS)
    ):
        for piece in _split_outside_parentheses(clause, _NAME_SEPARATORS):
            # 工商行政管理局（燃煤散烧管控办公室）及相关成员单位: two names
            for part in re.split(r"及(?=相关|有关|各)", piece):
                if part:
                    names.append(_Name(raw=part, clause=clause_no))
    return names


def _resolve(item: _Name, directory: Directory) -> list[_Name]:
    """Step 4: canonical name(s) and kind of one written name."""
    text = item.raw
    marker = _ENTERPRISE_MARKER.search(text)
    if marker:
        text = text[: marker.start()]
        item.enterprise_marker = True
    bare = _QUALIFIER.sub("", text)
    entry = directory.resolve(text) or directory.resolve(bare)
    if entry is not None:
        item.name, item.kind, item.known = entry.name, entry.kind, True
        return [item]
    glued = directory.segment(bare)
    if glued is not None:
        return [
            _Name(raw=item.raw, clause=item.clause, name=e.name, kind=e.kind, known=True)
            for e in glued
        ]
    item.name = bare or text
    item.kind = UnitKind.ENTERPRISE if marker else _guess_kind(item.name, bare != text)
    return [item]


def parse_units(cell: str, directory: Directory, role: Role | None = None) -> tuple[UnitRef, ...]:
    """Units of one cell; ``role`` forces every unit's role (牵头单位/配合单位 columns)."""
    resolved: list[_Name] = []
    for item in _names(cell, directory):
        resolved.extend(_resolve(item, directory))
    for index, item in enumerate(resolved):
        if not item.enterprise_marker:
            continue
        # 联创化工、方升化学等企业: unknown names before the marker, in its clause, are enterprises
        for before in reversed(resolved[:index]):
            named_unit = before.known and before.kind is not UnitKind.ENTERPRISE
            if before.clause != item.clause or named_unit or before.enterprise_marker:
                break
            before.kind = UnitKind.ENTERPRISE
    refs: list[UnitRef] = []
    seen: set[str] = set()
    for item in resolved:
        if item.name in seen:
            continue
        seen.add(item.name)
        item_role = role or (Role.LEAD if not refs else Role.COOPERATING)
        refs.append(UnitRef(name=item.name, role=item_role, kind=item.kind, raw=item.raw))
    return tuple(refs)


def merge_roles(lead: Sequence[UnitRef], cooperating: Iterable[UnitRef]) -> tuple[UnitRef, ...]:
    """Units from separate 牵头单位 and 配合单位 columns; a unit named in both leads."""
    seen = {unit.name for unit in lead}
    merged = list(lead)
    for unit in cooperating:
        if unit.name not in seen:
            seen.add(unit.name)
            merged.append(unit)
    return tuple(merged)
