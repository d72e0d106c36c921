"""The answers web under concurrent clients, and the daemon's tick beside it (run by hand).

    .venv/bin/python -m bench.web [--rows 100000] [--clients 200] [--seconds 20]

Fills a fresh temporary SQLite store with ``--rows`` task × unit rows shaped like a real
ledger (20 units a task, one of them the lead, drawn from a pool of rows/50 units, so a
unit has about 50 parts; due dates spread over 2018; some parts done, reported or
extended, so every light shows), makes a link to one typical unit's page and one to the
supervisors' board, and starts `reminder web` on it as a separate process. Then, for
each of the two pages, ``--clients`` concurrent clients (asyncio and one httpx client
with as many connections, each looping GETs) run for ``--seconds`` after a short
warm-up. The load generator runs in this process: it shares the machine's CPUs with the
server.

Prints the conditions (CPUs, load average before and after, rows, clients, seconds);
for each page: requests/s, p50/p95/p99 latency in ms, the errors (non-200 answers and
failed requests), the page size, and the CPU time the server and the load generator
used; and the daemon's idle tick (``run_tick`` at a moment when nothing is due, as in
bench/tick_idle, in a process of its own on the same store), median and max, once with
the web idle and once during the unit-page load.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import insert, select

from bench.tick_idle import NOW, insert_ledger  # NOW: the tick's moment, nothing due
from reminder.contacts import load_contacts
from reminder.rules import Rules
from reminder.settings import Config, load_config
from reminder.store.db import Store, open_store
from reminder.store.models import MetaRow, TaskRow, TaskUnitRow
from reminder.store.targets import FINGERPRINT
from reminder.tick import run_tick
from reminder.web.links import Link, Links, Scope, save_links

ROOT = Path(__file__).resolve().parent.parent
REMINDER = Path(sys.executable).with_name("reminder")
UNITS_PER_TASK = 20
TASKS_PER_UNIT = 50  # the pool of units: rows / 50
SECTIONS = ("加快调整能源消费结构", "强化工业企业治理", "深化移动源污染防治", "严格控制扬尘污染")
SECRET = "bench-web-secret-not-for-production"
SUPERVISOR = "督办组"
WARMUP_S = 2.0
TIMEOUT_S = 120.0  # a request slower than this counts as failed
TICK_GAP_S = 0.2  # between timed ticks: the daemon ticks once a minute, not in a loop
PHRASES = (
    "严格落实大气污染防治攻坚战各项任务",
    "开展专项执法检查，依法查处违法排污行为",
    "完成重点行业挥发性有机物综合治理",
    "建立问题清单和整改台账，逐项销号",
    "加强督导检查，确保按时保质完成",
)


def _config() -> Config:
    return load_config()


def _planning(config: Config) -> Rules:
    """As `reminder` builds it (reminder.app.App.planning)."""
    settings = config.settings
    contacts = load_contacts(config.contacts_path)
    return Rules(settings.policy, config.calendar(), settings.zone, contacts)


def _text(rng: random.Random, no: int) -> str:
    parts = [rng.choice(PHRASES) for _ in range(rng.randint(2, 6))]
    return f"第{no}项：" + "，".join(parts) + "。"


def fill(store: Store, rows: int, planning: Rules, today: dt.date, seed: int = 1) -> int:
    """A ledger of rows / 20 tasks × 20 units each; returns the number of tasks.

    The web's lights are computed against ``today`` (the web's clock): a 2018 due date
    is red, so the other lights come from what units did: done (a task, or a unit's
    part), reported, or extended into the next days (yellow) or months (green); 全年
    and 持续开展 tasks are never counted late (green)."""
    rng = random.Random(seed)
    tasks = max(1, rows // UNITS_PER_TASK)
    pool = [f"单位{n}" for n in range(1, max(UNITS_PER_TASK, rows // TASKS_PER_UNIT) + 1)]
    later = NOW + dt.timedelta(days=30)
    task_rows: list[dict[str, Any]] = []
    unit_rows: list[dict[str, Any]] = []
    for no in range(1, tasks + 1):
        pick = rng.random()
        start: dt.date | None = None
        due: dt.date | None
        if pick < 0.85:
            kind, due = "date", dt.date(2018, 1, 1) + dt.timedelta(days=rng.randrange(365))
            raw, milestones = f"{due.month}月{due.day}日", [due.isoformat()]
        elif pick < 0.95:
            kind, raw, milestones = "all_year", "全年", []
            start, due = dt.date(2018, 1, 1), dt.date(2018, 12, 31)
        else:
            kind, raw, milestones, due = "ongoing", "持续开展", [], None
        done = rng.random() < 0.10
        task_rows.append(
            {
                "id": no,
                "no": no,
                "section_no": 1 + (no - 1) * len(SECTIONS) // tasks,
                "text": _text(rng, no),
                "deadline_raw": raw,
                "deadline_kind": kind,
                "deadline_start": start,
                "deadline_due": due,
                "milestones": milestones,
                "remarks": "",
                "source_line": no,
                "status": "done" if done else "open",
                "done_at": NOW - dt.timedelta(days=rng.randrange(1, 200)) if done else None,
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
        for position, unit in enumerate(rng.sample(pool, UNITS_PER_TASK)):
            fate = rng.random()
            unit_done = not done and fate < 0.15
            reported = 0.15 <= fate < 0.20
            extended: dt.date | None = None
            if 0.20 <= fate < 0.25:
                extended = today + dt.timedelta(days=rng.randint(1, 6))  # yellow
            elif 0.25 <= fate < 0.30:
                extended = today + dt.timedelta(days=rng.randint(30, 90))  # green
            overdue = kind == "date" and due is not None and due < NOW.date()
            reminded = rng.randint(1, 8) if overdue and not (done or unit_done) else 0
            unit_rows.append(
                {
                    "task_id": no,
                    "unit": unit,
                    "role": "lead" if position == 0 else "cooperating",
                    "kind": "unit",
                    "raw": unit,
                    "position": position,
                    "is_target": True,
                    "done_at": NOW - dt.timedelta(days=rng.randrange(1, 100))
                    if unit_done
                    else None,
                    "done_note": "已完成" if unit_done else "",
                    "reminded": reminded,
                    "last_reminded_at": NOW - dt.timedelta(days=rng.randrange(1, 7))
                    if reminded
                    else None,
                    "planned_until": NOW - dt.timedelta(days=1),
                    "next_at": None
                    if done or unit_done
                    else later + dt.timedelta(minutes=len(unit_rows) % 1000),
                    "reported_at": NOW - dt.timedelta(days=rng.randrange(1, 10))
                    if reported
                    else None,
                    "due": extended,
                }
            )
    with store.write() as session:
        connection = session.connection()
        insert_ledger(connection, tasks, SECTIONS)
        connection.execute(insert(TaskRow.__table__), task_rows)  # type: ignore[attr-defined]
        for start_at in range(0, len(unit_rows), 50_000):
            connection.execute(
                insert(TaskUnitRow.__table__),  # type: ignore[attr-defined]
                unit_rows[start_at : start_at + 50_000],
            )
        session.add(MetaRow(key=FINGERPRINT, value=planning.fingerprint()))
    return tasks


def typical_unit(store: Store) -> tuple[str, int, int]:
    """A unit with the median number of parts that leads at least one task: (name,
    parts, led)."""
    table = TaskUnitRow.__table__  # type: ignore[attr-defined]
    parts: collections.Counter[str] = collections.Counter()
    led: collections.Counter[str] = collections.Counter()
    with store.read() as session:
        for unit, role in session.connection().execute(select(table.c.unit, table.c.role)):
            parts[str(unit)] += 1
            led[str(unit)] += role == "lead"
    ranked = sorted(parts, key=lambda name: (parts[name], name))
    median = parts[ranked[len(ranked) // 2]]
    name = min((n for n in ranked if led[n]), key=lambda n: (abs(parts[n] - median), -led[n], n))
    return name, parts[name], led[name]


# -- the tick, in a process of its own --------------------------------------------------


def tick_process(seconds: float) -> None:
    """Run in the child: a warm-up tick, "ready", wait for a line, then tick for
    ``seconds`` (a pause of TICK_GAP_S between ticks) and print the times as JSON."""
    config = _config()
    planning = _planning(config)
    store = open_store(config.settings.db)
    try:
        run_tick(store, planning, config.settings, NOW)
        print("ready", flush=True)
        sys.stdin.readline()
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            result = run_tick(store, planning, config.settings, NOW)
            times.append(time.perf_counter() - started)
            if result.targets:
                raise SystemExit(f"something was due: {result.targets} targets")
            time.sleep(TICK_GAP_S)
        print(json.dumps(times), flush=True)
    finally:
        store.dispose()


class Ticker:
    """The tick process, seen from the bench: started, ready, then told to go."""

    def __init__(self, seconds: float, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.web", "--tick-for", str(seconds)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise SystemExit(f"the tick process did not start (it said {line!r})")

    @property
    def _stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self) -> list[float]:
        line = self._stdout.readline()
        self.process.wait(60)
        if self.process.returncode != 0 or not line.strip():
            raise SystemExit(f"the tick process failed (exit {self.process.returncode})")
        times: list[float] = json.loads(line)
        return times

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def tick_line(label: str, times: list[float]) -> str:
    if not times:
        return f"  tick, {label}: no tick finished"
    return (
        f"  tick, {label + ':':<16} median {statistics.median(times) * 1000:7.2f} ms,"
        f" max {max(times) * 1000:7.2f} ms ({len(times)} ticks)"
    )


# -- the load ---------------------------------------------------------------------------


@dataclass(slots=True)
class Load:
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    elapsed: float = 0.0

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code != 200) + sum(
            self.failures.values()
        )


async def drive(client: httpx.AsyncClient, url: str, clients: int, seconds: float) -> Load:
    """``clients`` loops of GETs until ``seconds`` have passed (requests under way then
    finish and count)."""
    load = Load()
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                load.failures[type(exc).__name__] += 1
                continue
            load.latencies.append(time.perf_counter() - started)
            load.statuses[response.status_code] += 1
            if response.status_code == 200:
                load.sizes[len(response.content)] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    load.elapsed = time.perf_counter() - started
    return load


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bench_page(
    name: str, url: str, clients: int, seconds: float, server_pid: int, during: Ticker | None
) -> list[str]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S) as client:
        single = []
        for _ in range(5):
            started = time.perf_counter()
            (await client.get(url)).raise_for_status()
            single.append(time.perf_counter() - started)
        await drive(client, url, clients, min(WARMUP_S, seconds))
    # fresh connections: the warm-up's sat idle while its last requests finished, and
    # uvicorn closes an idle one after 5 s (a reuse racing that close fails)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S) as client:
        server_before, own_before = cpu_seconds(server_pid), own_cpu_seconds()
        if during is not None:
            during.go()
        load = await drive(client, url, clients, seconds)
        server_cpu = cpu_seconds(server_pid) - server_before
        own_cpu = own_cpu_seconds() - own_before
    done = len(load.latencies)
    lines = [
        f"{name}: {done} requests in {load.elapsed:.1f} s ({seconds:g} s of load, then the"
        " requests under way finished)",
        f"  one client alone: median {statistics.median(single) * 1000:.1f} ms (of 5)",
    ]
    if done:
        ms = [v * 1000 for v in load.latencies]
        lines += [
            f"  requests/s: {done / load.elapsed:.1f}",
            f"  latency ms: p50 {percentile(ms, 0.50):.1f}, p95 {percentile(ms, 0.95):.1f},"
            f" p99 {percentile(ms, 0.99):.1f}, max {max(ms):.1f}",
        ]
    other = {code: n for code, n in load.statuses.items() if code != 200}
    detail = ", ".join(
        [f"HTTP {code}: {n}" for code, n in sorted(other.items())]
        + [f"{kind}: {n}" for kind, n in sorted(load.failures.items())]
    )
    lines.append(f"  errors: {load.errors}" + (f" ({detail})" if detail else ""))
    sizes = sorted(load.sizes)
    if sizes:
        shown = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        lines.append(f"  page size: {shown} bytes")
    per = f", {server_cpu / done * 1000:.1f} ms a request" if done else ""
    lines.append(
        f"  CPU: server {server_cpu:.1f} s{per}; load generator {own_cpu:.1f} s"
        f" (of {load.elapsed * (os.cpu_count() or 1):.1f} CPU-s available)"
    )
    return lines


# -- the web process --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_web(folder: Path, env: dict[str, str], base_url: str) -> subprocess.Popen[bytes]:
    log = (folder / "web.log").open("wb")
    process = subprocess.Popen(
        [str(REMINDER), "web"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"reminder web exited ({process.returncode}):\n{web_log(folder)}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"reminder web did not answer /healthz in 60 s:\n{web_log(folder)}")


def web_log(folder: Path) -> str:
    path = folder / "web.log"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def raised(log: list[str]) -> collections.Counter[str]:
    """The exception each traceback in a log ends with, counted."""
    found: collections.Counter[str] = collections.Counter()
    last = ""
    for line in [*log, "ERROR:"]:
        if line.startswith(("ERROR:", "INFO:", "WARNING:", "Traceback", "reminder web:")):
            if last:
                found[last] += 1
            last = ""
        elif line and not line.startswith((" ", "The above", "During handling")):
            last = line
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the bench --------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run(args: argparse.Namespace, folder: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        "REMINDER_DB": f"sqlite:///{folder}/bench.db",
        "REMINDER_CONFIG": str(ROOT / "config"),
        "REMINDER_WEB_SECRET": SECRET,
        "REMINDER_WEB__LISTEN": f"127.0.0.1:{port}",
        "REMINDER_WEB__BASE_URL": base_url,
    }
    os.environ.update(env)  # for load_config and new_link here, and every child
    config = _config()
    planning = _planning(config)
    today = dt.datetime.now(config.settings.zone).date()
    started = time.perf_counter()
    store = open_store(env["REMINDER_DB"])
    try:
        tasks = fill(store, args.rows, planning, today)
        # the week's agenda and its letters, once, as the daemon would have: the timed
        # ticks then find nothing to do
        first = run_tick(store, planning, config.settings, NOW)
        unit, parts, led = typical_unit(store)
        maker = Links(config.settings.web)
        links = [
            maker.new(Scope.UNIT, unit, "bench-letter"),
            maker.new(Scope.SUPERVISOR, SUPERVISOR),
        ]
        made: list[Link] = [link for link in links if link is not None]
        with store.write() as session:
            save_links(session, made, dt.datetime.now(dt.UTC))
    finally:
        store.dispose()
    unit_url, board_url = made[0].url, made[1].url
    print(
        f"store: {args.rows} task × unit rows, {tasks} tasks, {args.rows // TASKS_PER_UNIT}"
        f" units, filled in {time.perf_counter() - started:.1f} s"
        f" (first tick: {len(first.items)} agenda items, {len(first.letters)} letters)"
    )
    print(f"unit page: {unit} ({parts} parts, lead of {led}); board: {SUPERVISOR}")
    print(
        "load generator: this process (asyncio, one httpx client), on the same"
        f" {os.cpu_count()} CPUs as the server; warm-up {WARMUP_S:.0f} s a page,"
        f" timeout {TIMEOUT_S:.0f} s"
    )
    web = start_web(folder, os.environ.copy(), base_url)
    try:
        idle = Ticker(args.seconds, os.environ.copy())
        try:
            idle.go()
            idle_times = idle.result()
        finally:
            idle.stop()
        during = Ticker(args.seconds, os.environ.copy())
        try:
            lines = asyncio.run(
                bench_page("unit page", unit_url, args.clients, args.seconds, web.pid, during)
            )
            busy_times = during.result()
        finally:
            during.stop()
        for line in lines:
            print(line)
        print(tick_line("web idle", idle_times))
        print(tick_line("unit-page load", busy_times))
        for line in asyncio.run(
            bench_page("board", board_url, args.clients, args.seconds, web.pid, None)
        ):
            print(line)
        alive = web.poll() is None
    finally:
        stop(web)
    log = web_log(folder).splitlines()
    errors = sum(line.startswith("ERROR:") for line in log)
    print(
        f"web process: {'ran to the end' if alive else 'DIED'}; its log: {len(log)} lines,"
        f" {errors} errors"
    )
    for line, count in raised(log).most_common(5):
        print(f"  {count} × {line[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tick-for", type=float, help=argparse.SUPPRESS)  # the tick child
    args = parser.parse_args()
    if args.tick_for is not None:
        tick_process(args.tick_for)
        return
    # a plain `kill` too ends through the finally blocks: the web stopped, the folder gone
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(
        f"conditions: {os.cpu_count()} CPUs, load average {load_average()} (before),"
        f" rows {args.rows}, clients {args.clients}, seconds {args.seconds:g}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-web-") as folder:
        run(args, Path(folder))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
