"""The answers web against a real server on a loopback port: each security rule of the
README is tried from outside, as an attacker or a careless clerk would."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from itsdangerous import TimestampSigner

from reminder.web.links import SALT
from tests.conftest import SEED, Cli
from tests.web_server import CSRF, bind, serving

UNIT, OTHER = "环境保护局", "公安局"
WHOLE, COAL = "市环境污染防治攻坚战领导小组办公室", "市燃煤散烧管控办公室"  # all; section 1
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@dataclass
class Site:
    url: str
    links: dict[str, str]  # unit → the link of its e-mail letter
    board: str  # the whole ledger's supervisor
    boards: dict[str, str]  # every supervisor's
    db: Path
    folder: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=10)


def letter_links(db: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Each unit's personal link (from its e-mail letters) and each supervisor's board
    (from the digests), as the outbox holds them."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT kind, unit, channel, recipient_name, payload FROM outbox"
        ).fetchall()
    links: dict[str, str] = {}
    boards: dict[str, str] = {}
    for kind, unit, channel, name, payload in rows:
        data = json.loads(payload)
        if kind == "letter" and channel == "email":
            links[unit] = data["link"]
        if kind == "digest" and data.get("board"):
            boards[name] = data["board"]
    return links, boards


@pytest.fixture
def site(cli: Cli, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    port = bind(monkeypatch)
    assert cli("import", str(SEED)).code == 0
    # the digest at 08:30, the letters at 09:00: what the daemon would have sent that day
    assert cli("digest", "--at", "2018-10-08 08:45").code == 0
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    db = isolated_env / "ledger.db"
    links, boards = letter_links(db)
    assert UNIT in links and OTHER in links and WHOLE in boards
    with serving(port) as url:
        yield Site(url, links, boards[WHOLE], boards, db, isolated_env)


def path(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def csrf(client: httpx.Client, link: str) -> str:
    page = client.get(path(link))
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found
    return found.group(1)


def journal(db: Path, kind: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute(
            "SELECT unit, note, origin FROM event WHERE kind = ? ORDER BY id", (kind,)
        ).fetchall()


def assert_refused_page(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    assert "0391-0000000" in response.text  # the office's phone
    assert "第1项" not in response.text and "任务" not in response.text.split("<main>")[1][:30]


def test_a_units_page_shows_its_own_tasks_and_records_the_reading(site: Site) -> None:
    with site.client() as client:
        page = client.get(path(site.links[UNIT]))
        assert page.status_code == 200
        assert "环境保护局 · 督办事项" in page.text and 'id="task-1"' in page.text
        assert 'id="task-2"' not in page.text  # 第2项 is not the unit's
        client.get(path(site.links[UNIT]))
    read = journal(site.db, "read")
    assert [(u, o) for u, _, o in read] == [(UNIT, "127.0.0.1")], "read once, with where from"
    assert read[0][1].startswith(f"letter:{UNIT}:email:")


def test_every_page_is_sent_with_the_security_headers(site: Site) -> None:
    with site.client() as client:
        for url in (path(site.links[UNIT]), path(site.board), "/l/nonsense", "/missing"):
            response = client.get(url)
            headers = response.headers
            assert "script-src" not in headers["content-security-policy"]
            assert "default-src 'none'" in headers["content-security-policy"]
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["x-frame-options"] == "DENY"
            assert headers["cache-control"] == "no-store"
            assert headers["referrer-policy"] == "no-referrer"
            assert headers["x-content-type-options"] == "nosniff"
            assert "server" not in headers


def test_tampered_unknown_expired_and_revoked_links_are_refused(site: Site, cli: Cli) -> None:
    link = path(site.links[UNIT])
    secret = (site.folder / "var" / "web_secret").read_text().strip()
    assert (site.folder / "var" / "web_secret").stat().st_mode & 0o777 == 0o600
    link_id = link.rsplit("/", 1)[1].split(".")[0]

    class Old(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 31 * 86400

    with site.client() as client:
        tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
        assert_refused_page(client.get(tampered), 403)
        forged = TimestampSigner(secret, salt=SALT).sign("notalinkid12").decode()
        assert_refused_page(client.get(f"/l/{forged}"), 403)
        expired = Old(secret, salt=SALT).sign(link_id).decode()
        assert_refused_page(client.get(f"/l/{expired}"), 410)
        # a unit's link is no board, a board link no unit's page
        assert_refused_page(client.get("/s/" + link.rsplit("/", 1)[1]), 403)
        assert_refused_page(client.get("/l/" + site.board.rsplit("/", 1)[1]), 403)
        assert client.get(link).status_code == 200
        assert cli("web", "revoke", "--unit", UNIT).code == 0
        assert_refused_page(client.get(link), 410)
        token = csrf(client, site.links[OTHER])
        posted = client.post(link + "/task/1/progress", data={"csrf": token, "note": "x"})
        assert posted.status_code == 410
    assert journal(site.db, "progress") == []


def test_a_unit_cannot_touch_another_units_task(site: Site) -> None:
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        mine = path(site.links[UNIT])
        for number in ("2", "999", "abc"):
            response = client.post(
                f"{mine}/task/{number}/progress", data={"csrf": token, "note": "越权"}
            )
            assert response.status_code in (400, 404), number
        done = client.post(f"{mine}/task/2/done", data={"csrf": token, "note": "越权"})
        assert done.status_code == 400 and "不是环境保护局的任务" in done.text
    assert journal(site.db, "progress") == [] and journal(site.db, "report") == []


def test_forms_need_the_csrf_token_and_our_origin(site: Site) -> None:
    mine = path(site.links[UNIT])
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        url = f"{mine}/task/1/progress"
        assert client.post(url, data={"note": "无令牌"}).status_code == 403
        assert client.post(url, data={"csrf": "forged", "note": "错令牌"}).status_code == 403
        foreign = client.post(
            url, data={"csrf": token, "note": "跨站"}, headers={"origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        cross = client.post(
            url, data={"csrf": token, "note": "跨站"}, headers={"sec-fetch-site": "cross-site"}
        )
        assert cross.status_code == 403
        with site.client() as stranger:  # the token without its cookie
            assert stranger.post(url, data={"csrf": token, "note": "无Cookie"}).status_code == 403
        ok = client.post(
            url, data={"csrf": token, "note": "正常报送"}, headers={"origin": site.url}
        )
        assert ok.status_code == 303
    assert [n for _, n, _ in journal(site.db, "progress")] == ["正常报送"]


def test_what_a_unit_writes_is_shown_escaped(site: Site) -> None:
    mine = path(site.links[UNIT])
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        note = '<script>alert(1)</script><img src=x onerror="alert(2)">'
        assert (
            client.post(f"{mine}/task/1/progress", data={"csrf": token, "note": note}).status_code
            == 303
        )
        page = client.get(mine).text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_attachments_are_checked_by_content_kept_once_and_served_as_downloads(
    site: Site,
) -> None:
    mine = path(site.links[UNIT])
    theirs = path(site.links[OTHER])
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        fake = client.post(
            f"{mine}/task/1/done",
            data={"csrf": token, "note": "办结"},
            files={
                "file": ("report.pdf", b"<html><script>alert(1)</script></html>", "application/pdf")
            },
        )
        assert fake.status_code == 400 and "只接受PDF或图片" in fake.text
        assert journal(site.db, "report") == []
        done = client.post(
            f"{mine}/task/1/done",
            data={"csrf": token, "note": "已办结，见附件"},
            files={"file": ("验收报告.pdf", PDF, "application/octet-stream")},
        )
        assert done.status_code == 303
    kept = [p for p in (site.folder / "var" / "attachments").rglob("*") if p.is_file()]
    assert len(kept) == 1 and kept[0].read_bytes() == PDF
    sha = kept[0].name
    with site.client() as client:
        own = client.get(f"{mine}/file/{sha}")
        assert own.status_code == 200 and own.content == PDF
        assert own.headers["content-type"] == "application/pdf"
        assert own.headers["content-disposition"].startswith("attachment;")
        assert "sandbox" in own.headers["content-security-policy"]
        assert client.get(f"{theirs}/file/{sha}").status_code == 404  # not theirs
        assert client.get(f"{mine}/file/{'0' * 64}").status_code == 404
        assert client.get(f"{mine}/file/..%2f..%2fledger.db").status_code == 404
        board = client.get(f"{path(site.board)}/file/{sha}")
        assert board.status_code == 200 and board.content == PDF


def test_bodies_are_limited(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = path(site.links[UNIT])
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        big = client.post(f"{mine}/task/1/progress", data={"csrf": token, "note": "长" * 40000})
        assert big.status_code == 413
        huge = PDF + b"0" * (11 << 20)
        upload = client.post(
            f"{mine}/task/1/done",
            data={"csrf": token, "note": "大附件"},
            files={"file": ("big.pdf", huge, "application/pdf")},
        )
        assert upload.status_code == 413
    assert journal(site.db, "progress") == [] and journal(site.db, "report") == []
    assert not list((site.folder / "var").rglob("attachments/*/*"))


def test_posts_are_rate_limited_per_link(site: Site) -> None:
    mine = path(site.links[UNIT])
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        codes = [
            client.post(
                f"{mine}/task/1/progress", data={"csrf": token, "note": f"第{n}次"}
            ).status_code
            for n in range(22)
        ]
        assert codes[:20] == [303] * 20 and codes[20:] == [429, 429]
        # another unit's link is not held up
        other = csrf(client, site.links[OTHER])
        theirs = path(site.links[OTHER])
        page = client.get(theirs).text
        number = page.split('id="task-', 1)[1].split('"', 1)[0]
        posted = client.post(
            f"{theirs}/task/{number}/progress", data={"csrf": other, "note": "正常"}
        )
        assert posted.status_code == 303


def test_the_post_limit_holds_across_web_processes(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second web process on the same store counts the unit's posts from the journal."""
    mine = path(site.links[UNIT])
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        for n in range(20):
            posted = client.post(f"{mine}/task/1/progress", data={"csrf": token, "note": f"{n}"})
            assert posted.status_code == 303
    second = bind(monkeypatch)
    with serving(second) as url, httpx.Client(base_url=url, follow_redirects=False) as other:
        page = other.get(mine)
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        limited = other.post(f"{mine}/task/1/progress", data={"csrf": token, "note": "第21次"})
        assert limited.status_code == 429
    assert len(journal(site.db, "progress")) == 20


def test_the_board_filters_and_reviews_with_csrf(site: Site) -> None:
    board = path(site.board)
    mine = path(site.links[UNIT])
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        client.post(f"{mine}/task/1/done", data={"csrf": token, "note": "已完成"})
        page = client.get(board, params={"unit": UNIT, "state": "reported"})
        assert page.status_code == 200
        assert "第1项" in page.text and "共1条" in page.text
        review = client.get(f"{board}/review")
        assert "已完成" in review.text
        answer = review.text.split('id="answer-', 1)[1].split('"', 1)[0]
        token = CSRF.search(review.text).group(1)  # type: ignore[union-attr]
        refused = client.post(f"{board}/answer/{answer}", data={"verdict": "approve"})
        assert refused.status_code == 403
        empty = client.post(f"{board}/answer/{answer}", data={"csrf": token, "verdict": "return"})
        assert empty.status_code == 400 and "须写明理由" in empty.text
        ok = client.post(f"{board}/answer/{answer}", data={"csrf": token, "verdict": "approve"})
        assert ok.status_code == 303
        detail = client.get(f"{board}/task/1").text
        assert "审核通过" in detail and "签收" in detail
        export = client.get(f"{board}/export.xlsx")
        assert export.status_code == 200 and export.content[:2] == b"PK"
    approved = journal(site.db, "approve")
    assert approved and approved[0][0] == UNIT and approved[0][2] == "127.0.0.1"


def test_a_scoped_supervisor_sees_and_decides_only_its_part(site: Site) -> None:
    mine = path(site.links[UNIT])
    coal = path(site.boards[COAL])
    with site.client() as client:
        token = csrf(client, site.links[UNIT])
        # 第1项 is in section 1 (能源消费结构), 第27项 in section 3 (交通运输结构)
        for number in (1, 27):
            posted = client.post(f"{mine}/task/{number}/done", data={"csrf": token, "note": "办结"})
            assert posted.status_code == 303
        page = client.get(coal)
        assert page.status_code == 200
        assert "第27项" not in page.text and "第1项" in page.text
        review = client.get(f"{coal}/review").text
        assert 'id="answer-1"' in review and 'id="answer-2"' not in review
        token = CSRF.search(review).group(1)  # type: ignore[union-attr]
        outside = client.post(f"{coal}/answer/2", data={"csrf": token, "verdict": "approve"})
        assert outside.status_code == 400 and "不属于你的督办范围" in outside.text
    assert journal(site.db, "approve") == []


@pytest.mark.postgres
def test_the_web_on_postgresql(
    cli: Cli, pg_url: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers are rows like any other: a clerk reports, a supervisor approves, on the
    machine's PostgreSQL."""
    monkeypatch.setenv("REMINDER_DB", pg_url)
    port = bind(monkeypatch)
    assert cli("import", str(SEED)).code == 0
    assert cli("digest", "--at", "2018-10-08 08:45").code == 0
    assert cli("run", "--once", "--at", "2018-10-08 09:30").code == 0
    letters = {
        p.read_text("utf-8").split("To: ", 1)[1].split("\n", 1)[0]: p.read_text("utf-8")
        for p in (isolated_env / "var" / "outbox").rglob("letter-*.txt")
    }
    sms = next(text for to, text in letters.items() if UNIT in to)
    link = "/" + sms.split("签收及反馈：", 1)[1].split()[0].split("/", 3)[3]
    with serving(port) as url, httpx.Client(base_url=url, follow_redirects=False) as client:
        page = client.get(link)
        assert page.status_code == 200 and 'id="task-1"' in page.text
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        done = client.post(f"{link}/task/1/done", data={"csrf": token, "note": "已完成"})
        assert done.status_code == 303
    waiting = json.loads(cli("review", "--json").out)
    assert [(w["task"], w["unit"]) for w in waiting] == [(1, UNIT)]
    assert cli("review", "approve", str(waiting[0]["id"])).code == 0
    tasks = json.loads(cli("tasks", "--json").out)["tasks"]
    units = {u["name"]: u for u in tasks[0]["units"]}
    assert units[UNIT]["status"] == "done"
