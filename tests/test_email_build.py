"""The fast MIME builder: what mail clients parse back, and no header injection."""

from __future__ import annotations

import datetime as dt
import email
import email.header
import email.policy
import email.utils
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reminder.channels.mime import build_email, encode_words, message_id
from reminder.errors import DeliveryError

NOW = dt.datetime(2018, 10, 8, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


FIELDS: dict[str, Any] = {
    "from_name": "济源市攻坚办",
    "from_address": "duban@example.org",
    "to_name": "环境保护局",
    "to_address": "hbj@example.org",
    "subject": "【逾期提醒】第8项任务已逾期3个工作日",
    "text": "环境保护局：\n\n请立即办结。\n",
    "html": "<p>环境保护局：</p>",
    "key": "overdue:8:环境保护局:email:hbj@example.org:2018-10-08",
    "kind": "overdue",
}


def build(**overrides: str) -> tuple[bytes, str]:
    values = {
        "from_name": "济源市攻坚办",
        "from_address": "duban@example.org",
        "to_name": "环境保护局",
        "to_address": "hbj@example.org",
        "subject": "【逾期提醒】第8项任务已逾期3个工作日：煤电热电联产机组、燃煤燃气集中供热锅炉要满足国家和我省环保排放标准",
        "text": "环境保护局：\n\n请立即办结。\n",
        "html": "<p>环境保护局：</p><p>请立即办结。</p>",
        "key": "overdue:8:环境保护局:email:hbj@example.org:2018-10-08",
    } | overrides
    return build_email(date=NOW, kind="overdue", **values)


def is_wire_ready(data: bytes) -> bool:
    """What the SMTP sender relies on: CRLF line ends, and no line starting with a dot
    (DATA would need it stuffed), so the bytes go out as they are."""
    lines = data.split(b"\r\n")
    return (
        data.endswith(b"\r\n")
        and not any(b"\n" in line or b"\r" in line for line in lines)
        and not any(line.startswith(b".") for line in lines)
    )


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_chinese_headers_and_both_parts_decode() -> None:
    data, msgid = build()
    message = parse(data)
    assert message["Subject"].startswith("【逾期提醒】第8项任务已逾期3个工作日")
    assert message["From"].addresses[0].display_name == "济源市攻坚办"
    assert message["From"].addresses[0].addr_spec == "duban@example.org"
    assert message["To"].addresses[0].display_name == "环境保护局"
    assert message["Message-ID"] == msgid
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "环境保护局：\n\n请立即办结。\n"
    assert "<p>请立即办结。</p>" in html.get_content()
    assert plain["Content-Transfer-Encoding"] == "base64"
    assert not message.defects


def test_lines_are_folded_and_crlf() -> None:
    data, _ = build()
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert is_wire_ready(data)
    subject_lines = [line for line in lines if line.startswith((b"Subject:", b" =?utf-8?b?"))]
    assert len(subject_lines) > 1  # a long subject is folded over several lines


def test_message_id_comes_from_the_key() -> None:
    _, first = build()
    _, again = build()
    _, other = build(key="overdue:8:环境保护局:email:hbj@example.org:2018-10-11")
    assert (
        first
        == again
        == message_id("overdue:8:环境保护局:email:hbj@example.org:2018-10-08", "duban@example.org")
    )
    assert first != other
    assert first.endswith("@example.org>")


@pytest.mark.parametrize(
    "name", ["boss@evil.example, Unit", 'Unit "A", Dept. \\ B', "J. Smith (督办)", "a;b:c<d>"]
)
def test_a_display_name_is_one_name_whatever_it_holds(name: str) -> None:
    message = parse(build(to_name=name, from_name=name)[0])
    for header in ("To", "From"):
        addresses = message[header].addresses
        assert len(addresses) == 1
        assert addresses[0].display_name == name


def test_control_characters_never_reach_a_header_as_themselves() -> None:
    data, _ = build(subject="a\x00b\x1bc", to_name="Unit\x07")
    head = data.split(b"\r\n\r\n", 1)[0]
    assert not any(byte < 32 and byte not in (9, 10, 13) for byte in head)
    message = parse(data)
    assert message["Subject"] == "a\x00b\x1bc"
    assert message["To"].addresses[0].display_name == "Unit\x07"


def test_the_date_header_is_in_the_zone_it_was_given() -> None:
    utc = NOW.astimezone(dt.UTC)
    assert b"Date: Mon, 08 Oct 2018 01:00:00 +0000" in build_email(**{**FIELDS, "date": utc})[0]
    # the same instant in +08:00 (equal to the one above, to Python)
    assert b"Date: Mon, 08 Oct 2018 09:00:00 +0800" in build()[0]


def test_task_text_cannot_inject_headers() -> None:
    data, _ = build(subject="第8项\r\nBcc: evil@example.com\r\nX-Evil: 1")
    message = parse(data)
    assert message["Bcc"] is None
    assert message["X-Evil"] is None
    assert message["Subject"] == "第8项 Bcc: evil@example.com X-Evil: 1"


@pytest.mark.parametrize(
    "field",
    [
        {"to_address": "hbj@example.org\r\nBcc: evil@example.com"},
        {"to_address": "hbj@example.org>, <evil@example.com"},
        {"from_address": "a b@example.org"},
        {"to_name": "环境保护局\r\nBcc: evil@example.com"},
        {"to_address": "hbj\x00@example.org"},
    ],
)
def test_unsafe_addresses_and_names_are_refused(field: dict[str, str]) -> None:
    with pytest.raises(DeliveryError) as caught:
        build(**field)
    assert caught.value.permanent


one_line = st.text(max_size=120).filter(lambda s: "\r" not in s and "\n" not in s)


@given(
    subject=st.text(min_size=1, max_size=200).filter(lambda s: s.strip()),
    name=one_line,
    text=st.text(max_size=500),
    html=st.text(max_size=500),
)
def test_any_message_goes_on_the_wire_as_built(
    subject: str, name: str, text: str, html: str
) -> None:
    # the sender writes the bytes after DATA unchanged: lines starting with "." (a
    # lone "." ends the message) or bare CR/LF in the task text must never reach them
    data, _ = build(subject=subject, to_name=name, from_name=name, text=text, html=html)
    assert is_wire_ready(data)
    message = parse(data)
    plain = message.get_body(("plain",))
    assert plain is not None
    assert plain.get_payload(decode=True) == text.encode()  # the task text, byte for byte


@given(st.text(min_size=1, max_size=300).filter(lambda s: s.strip()))
def test_any_subject_round_trips_on_one_line(subject: str) -> None:
    data, _ = build(subject=subject)
    message = parse(data)
    assert message["Subject"] == " ".join(subject.split())
    headers = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert all(line.startswith((b" ", b"\t")) or b":" in line for line in headers)
    assert [h for h in headers if h.lower().startswith(b"subject:")] == [headers[2]]


@given(st.text(max_size=60))
def test_encoded_words_decode_to_the_text(text: str) -> None:
    if "\r" in text or "\n" in text:
        with pytest.raises(DeliveryError):
            encode_words(text)
        return
    encoded = encode_words(text)
    assert all(len(word) <= 75 for word in encoded.split("\r\n "))
    decoded = str(email.header.make_header(email.header.decode_header(encoded)))
    assert decoded == text or (text.isascii() and encoded == text)


def header_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def mailbox(data: bytes, header: str) -> tuple[str, str]:
    """(display name, address) of an address header, decoded as RFC 2047 says: the
    space between two adjacent encoded-words is no part of the text. (Python's own
    address parser keeps it: 领导 小组.)"""
    raw = email.message_from_bytes(data, policy=email.policy.compat32)[header]
    phrase, _, address = raw.rpartition("<")
    name = str(email.header.make_header(email.header.decode_header(phrase.strip())))
    if name.startswith('"'):
        name = email.utils.unquote(name).replace('\\"', '"').replace("\\\\", "\\")
    return name, address.strip().removesuffix(">")


@pytest.mark.parametrize(
    "to_name",
    [
        "济源市产城融合示范区管委",  # 12 characters: one encoded-word, then the address
        "济源市产城融合示范区管理委员",  # 14: a whole encoded-word (42 bytes)
        "济源市环境污染防治攻坚战领导小组办公室",  # 19: two words
        "济源市虎岭高新技术产业开发区管理委员会（克井镇人民政府）",
        "Environmental Protection Bureau of Jiyuan, Henan Province",  # ASCII, quoted
        "环境保护局",
    ],
)
@pytest.mark.parametrize(
    "to_address", ["hbj@example.org", "huanjing.baohu.ju.duban.lianluoyuan@jiyuan-city.example.org"]
)
def test_address_headers_are_folded_to_78_characters(to_name: str, to_address: str) -> None:
    from_name = "济源市环境污染防治攻坚战领导小组办公室督办"
    data, _ = build(to_name=to_name, to_address=to_address, from_name=from_name)
    for line in header_lines(data):
        assert len(line) <= 78, line
    assert mailbox(data, "To") == (to_name, to_address)
    assert mailbox(data, "From") == (from_name, "duban@example.org")
    message = parse(data)  # and the modern parser reads the same addresses
    assert [a.addr_spec for a in message["To"].addresses] == [to_address]
    assert [a.addr_spec for a in message["From"].addresses] == ["duban@example.org"]
    assert is_wire_ready(data)


@given(
    name=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=40,
    ).filter(lambda s: s.strip() == s and s.strip()),
    local=st.from_regex(r"[a-z0-9]{1,40}", fullmatch=True),
)
def test_any_display_name_folds_to_78_and_decodes_to_itself(name: str, local: str) -> None:
    data, _ = build(to_name=name, to_address=f"{local}@example.org")
    assert all(len(line) <= 78 for line in header_lines(data))
    [to] = parse(data)["To"].addresses
    assert to.addr_spec == f"{local}@example.org"
    if not name.isascii():  # encoded-words: the name comes back whole
        assert mailbox(data, "To") == (name, f"{local}@example.org")
