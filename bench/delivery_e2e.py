"""Delivery end to end: `reminder run --once` against Prometheus Alertmanager, same sink.

    .venv/bin/python -m bench.delivery_e2e [-n 10000] [--runs 3] [--variants gateway,files,letters]

Needs smtp-sink (Debian package postfix, see BENCH.md) and prometheus-alertmanager (0.25
measured). Every contender gets a fresh smtp-sink on loopback, so counts are separate;
what is compared is e-mails counted at the sink per second. The contenders alternate
in each round (ours in each variant, then Alertmanager), so the machine's load falls on
both alike. Printed per round, then medians and ratios.

Ours: a generated ledger and contacts (``-n`` units, each with its own mailbox and
mobile), imported once per variant (not timed); each run copies that store and runs
``reminder run --once --at "2018-10-08 09:30"`` as a subprocess with the shipped
policy (this checkout's ``config/reminder.toml`` and ``calendar.toml``): timed from start
to exit, so start-up, planning, enqueueing and delivery are all in. Every unit's tasks are
due 9月30日, so on 8 October each owes an overdue letter by e-mail and an SMS copy:

- ``gateway``: one task a unit, SMS to a loopback HTTP gateway (a small asyncio server in
  its own process answering 200 ``{"errcode": 0}``, as tests/http_server.py does);
- ``files``: one task a unit, SMS to the file channel (no gateway configured: each
  copy a file, durable before it counts as sent);
- ``letters``: three tasks a unit, SMS to the file channel: the letters carry three items
  each, one e-mail and one SMS a unit as shipped, so the e-mail count is the same.

Alertmanager: a config whose route sends each alert as one e-mail to the sink
(``group_by: [id]``, a unique label; ``group_wait: 0s``; no TLS; no resolved mails),
fed N alerts (N = the e-mails ours put on the wire in the same round) over its HTTP API
v2 in posts of 1,000, timed from the first post until the sink has counted N. Its
start-up is not in its time (ours is in ours).

Each contender's CPU time is printed too (user + system): ours, the command's and its
render workers' (``RUSAGE_CHILDREN`` over the run); Alertmanager's from /proc over its
timed part. smtp-sink's (and the gateway's) is in neither.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.delivery import Sink, free_port

ROOT = Path(__file__).resolve().parent.parent
REMINDER = Path(sys.executable).with_name("reminder")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
TICK = "2018-10-08 09:30"  # the first working day after 9月30日 and the National Day holiday
TITLE = "济源市2018年大气污染防治攻坚战任务分解台账（投递测试）"
HEADER = "\t序号\n\t工作任务\n\t责任单位\n\t完成时限\n\t备注\n"
BODY = "这是一封督办提醒测试邮件，请按时完成任务并报告办结情况。" * 30  # ~1 KB of Chinese
VARIANTS = {"gateway": 1, "files": 1, "letters": 3}  # tasks a unit

GATEWAY = textwrap.dedent(
    """
    import asyncio, os, sys
    count = 0
    ANSWER = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
              b"Content-Length: 29\\r\\n\\r\\n" + b'{"errcode": 0, "errmsg": "ok"}'[:29])
    async def serve(reader, writer):
        global count
        try:
            while head := await reader.readuntil(b"\\r\\n\\r\\n"):
                length = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                count += 1
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
    async def main():
        stop = asyncio.Event()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        asyncio.get_running_loop().add_reader(0, lambda: os.read(0, 64) or stop.set())
        await stop.wait()
    asyncio.run(main())
    print(count, flush=True)
    """
)


def unit_name(i: int) -> str:
    return f"济源第{i}号督办试点单位"


def write_ledger(path: Path, units: int, per_unit: int) -> None:
    rows, no = [TITLE, HEADER, "\t一\n\t强化督办投递测试\n"], 0
    for i in range(1, units + 1):
        for k in range(per_unit):
            no += 1
            text = f"第{i}号单位完成第{k + 1}项整治任务并报送进展"
            rows.append(f"\t{no}\n\t{text}\n\t{unit_name(i)}\n\t9月30日\n\t\n")
    path.write_text("\n".join(rows), encoding="utf-8")


def write_config(folder: Path, units: int) -> None:
    """The shipped reminder.toml and calendar.toml, and a contacts.toml of ``units``."""
    folder.mkdir(parents=True)
    for name in ("reminder.toml", "calendar.toml"):
        shutil.copy(ROOT / "config" / name, folder / name)
    lines = []
    for i in range(1, units + 1):
        lines += [
            "[[unit]]",
            f'name = "{unit_name(i)}"',
            f'email = "u{i}@example.org"',
            f'mobile = "139{i:08d}"',
            "",
        ]
    (folder / "contacts.toml").write_text("\n".join(lines), encoding="utf-8")


def reminder_env(config: Path, db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDER_")}
    env.update(REMINDER_CONFIG=str(config), REMINDER_DB=f"sqlite:///{db}")
    env["REMINDER_LOG_LEVEL"] = "warning"
    return env


@dataclass
class Prepared:
    variant: str
    config: Path
    store: Path  # the imported store each run copies


def prepare(folder: Path, variant: str, units: int) -> Prepared:
    base = folder / variant
    write_config(base / "config", units)
    ledger = base / "ledger.txt"
    write_ledger(ledger, units, VARIANTS[variant])
    store = base / "imported.db"
    result = subprocess.run(
        [str(REMINDER), "import", str(ledger)],
        env=reminder_env(base / "config", store),
        cwd=base,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"import failed: {result.stderr or result.stdout}")
    return Prepared(variant, base / "config", store)


class Gateway:
    """The SMS gateway in its own process; ``stop`` returns the requests it answered."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", GATEWAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}/send"

    def stop(self) -> int:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        count = int(self.process.stdout.read().split()[-1])
        self.process.wait(10)
        return count


@dataclass
class Outcome:
    seconds: float
    mails: int  # counted at the sink
    sms: int  # at the gateway, or files written
    line: str  # what the command printed last
    cpu_s: float  # CPU seconds (user + system) of the contender, its children included


def children_cpu_s() -> float:
    """CPU seconds of this process's children that ended and were reaped (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of a running process (user + system, and its children waited for)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def ours(prepared: Prepared, folder: Path, run: int) -> Outcome:
    work = folder / f"run-{prepared.variant}-{run}"
    work.mkdir()
    db = work / "ledger.db"
    shutil.copy(prepared.store, db)
    env = reminder_env(prepared.config, db)
    outbox = work / "outbox"
    env.update(
        REMINDER_SMTP__TLS="none",
        REMINDER_SMTP__HOST="127.0.0.1",
        REMINDER_DELIVERY__OUTBOX_DIR=str(outbox),
    )
    gateway = Gateway() if prepared.variant == "gateway" else None
    if gateway is not None:
        env["REMINDER_SMS__URL"] = gateway.url
    sink = Sink(folder)
    env["REMINDER_SMTP__PORT"] = str(sink.port)
    try:
        before = children_cpu_s()  # the run's only child reaped in between
        started = time.perf_counter()
        result = subprocess.run(
            [str(REMINDER), "run", "--once", "--at", TICK],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        cpu = children_cpu_s() - before
        mails = sink.messages()
    finally:
        sink.stop()
        sms = gateway.stop() if gateway is not None else len(list(outbox.rglob("*.txt")))
    if result.returncode != 0:
        raise RuntimeError(f"reminder run --once failed: {result.stderr[-2000:]}")
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    shutil.rmtree(work)
    return Outcome(seconds, mails, sms, last, cpu)


ALERTMANAGER_CONFIG = """\
global:
  smtp_smarthost: 127.0.0.1:{port}
  smtp_from: duban@example.org
  smtp_require_tls: false
route:
  receiver: mail
  group_by: [id]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 1000h
receivers:
  - name: mail
    email_configs:
      - to: 'u{{{{ .GroupLabels.id }}}}@example.org'
        send_resolved: false
        headers:
          Subject: '{{{{ .CommonAnnotations.summary }}}}'
        html: '{{{{ .CommonAnnotations.description }}}}'
"""


def _ready(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def counted(sink: Sink) -> int:
    found = re.findall(r"mesg=(\d+)", sink.counts.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def alertmanager(folder: Path, n: int, run: int) -> Outcome:
    work = folder / f"am-{run}"
    work.mkdir()
    sink = Sink(folder)
    config = work / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG.format(port=sink.port))
    web = free_port()
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _ready(f"http://127.0.0.1:{web}/-/ready", 30)
        now = dt.datetime.now(dt.UTC).isoformat()
        posts = []
        for start in range(0, n, 1000):
            alerts = [
                {
                    "labels": {"alertname": "督办逾期", "id": str(i), "unit": unit_name(i)},
                    "annotations": {
                        "summary": f"【逾期提醒】第{i}项任务已逾期",
                        "description": BODY,
                    },
                    "startsAt": now,
                }
                for i in range(start, min(n, start + 1000))
            ]
            posts.append(json.dumps(alerts, ensure_ascii=False).encode())
        idle_cpu = proc_cpu_s(process.pid)  # its start-up, not counted (nor in its time)
        started = time.perf_counter()
        for body in posts:
            request = urllib.request.Request(
                f"http://127.0.0.1:{web}/api/v2/alerts",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as answer:
                assert answer.status == 200
        deadline = time.monotonic() + 300
        while counted(sink) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        mails = counted(sink)
        cpu = proc_cpu_s(process.pid) - idle_cpu
    finally:
        process.terminate()
        process.wait(10)
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    return Outcome(seconds, mails, 0, "", cpu)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10_000, help="units (e-mails a run)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    print(f"{os.cpu_count()} CPUs, load {load()}, {args.n} units, tick {TICK}")
    rates: dict[str, list[float]] = {v: [] for v in [*variants, "alertmanager"]}
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="reminder-e2e-") as name:
        folder = Path(name)
        started = time.perf_counter()
        prepared = {v: prepare(folder, v, args.n) for v in variants}
        print(f"imported {len(variants)} ledgers in {time.perf_counter() - started:.0f} s")
        for run in range(1, args.runs + 1):
            mails = args.n
            for variant in variants:
                got = ours(prepared[variant], folder, run)
                rate = got.mails / got.seconds
                rates[variant].append(rate)
                mails = got.mails
                print(
                    f"round {run}: {variant:8} {rate:7.0f} e-mails/s ({got.mails} at the sink,"
                    f" {got.sms} SMS, {got.seconds:.1f} s start to exit, CPU {got.cpu_s:.1f} s"
                    f" = {1e6 * got.cpu_s / max(got.mails, 1):.0f} µs an e-mail; {got.line})"
                    f" load {load()}"
                )
            theirs = alertmanager(folder, mails, run)
            am = theirs.mails / theirs.seconds
            rates["alertmanager"].append(am)
            for variant in variants:
                ratios[variant].append(rates[variant][-1] / am)
            print(
                f"round {run}: alertmanager {am:7.0f} e-mails/s ({theirs.mails} at the sink,"
                f" {theirs.seconds:.1f} s from the first post, CPU {theirs.cpu_s:.1f} s ="
                f" {1e6 * theirs.cpu_s / max(theirs.mails, 1):.0f} µs an e-mail) load {load()}"
            )
    am = statistics.median(rates["alertmanager"])
    print(f"median of {args.runs}: alertmanager {am:.0f}/s")
    for variant in variants:
        ours_rate = statistics.median(rates[variant])
        ratio = statistics.median(ratios[variant])
        verdict = "met" if ratio >= 2 else "NOT met"
        print(
            f"median of {args.runs}: {variant:8} {ours_rate:.0f}/s, {ratio:.2f}× Alertmanager"
            f" (median of the rounds' ratios; target 2×: {verdict})"
        )


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    main()
