"""The daemon's time from start to READY and its idle memory, on the seed (run by hand).

    .venv/bin/python -m bench.daemon_start [--runs 3] [--idle 5]

In a fresh folder: import the bundled ledger, then start `reminder run` (the embedded
defaults: SQLite, the file channel) with ``NOTIFY_SOCKET`` set, as systemd would, and

1. time from the process's start to READY=1, and to the end of its first tick (the
   catch-up: every reminder the 2018 ledger owes today, written under var/outbox/);
2. after ``--idle`` seconds with nothing left to do, read the resident memory (VmRSS,
   and VmHWM, the peak) of the daemon and of its render worker processes;
3. SIGTERM it and time the exit; then start it again on the same store (nothing owed:
   the restart case) and measure the same.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REMINDER = Path(sys.executable).with_name("reminder")
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"


def memory_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def first_tick(log: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.startswith("{") and json.loads(line)["event"] == "tick":
                return True
        time.sleep(0.01)
    return False


def one_start(folder: Path, env: dict[str, str], idle_s: float, name: str) -> dict[str, float]:
    sock_path = folder / f"notify-{name}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(60)
        log = folder / f"{name}.log"
        started = time.perf_counter()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(REMINDER), "run"],
                cwd=folder,
                env=env | {"NOTIFY_SOCKET": str(sock_path)},
                stdout=out,
                stderr=out,
            )
        while b"READY=1" not in sock.recv(4096):
            pass
        ready = time.perf_counter() - started
        if not first_tick(log, 120):
            process.kill()
            raise SystemExit(f"no tick: see {log}")
        ticked = time.perf_counter() - started
        time.sleep(idle_s)
        main = memory_kib(process.pid)
        workers = [memory_kib(child) for child in children(process.pid)]
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        stopped = time.perf_counter() - stopping
    sock_path.unlink()
    if code != 0:
        raise SystemExit(f"exit {code}: see {log}")
    return {
        "ready_s": ready,
        "first_tick_s": ticked,
        "stop_s": stopped,
        "rss_mib": main["VmRSS"] / 1024,
        "peak_mib": main["VmHWM"] / 1024,
        "workers": len(workers),
        "workers_rss_mib": sum(w["VmRSS"] for w in workers) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before reading RSS")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"catch-up": [], "restart": []}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDER_")}
            env |= {"REMINDER_CONFIG": str(ROOT / "config"), "REMINDER_DB": "sqlite:///ledger.db"}
            subprocess.run(
                [str(REMINDER), "import", str(SEED)],
                cwd=folder,
                env=env,
                check=True,
                capture_output=True,
            )
            results["catch-up"].append(one_start(folder, env, args.idle, "catch-up"))
            sent = sum(1 for _ in (folder / "var" / "outbox").rglob("*") if _.is_file())
            results["restart"].append(one_start(folder, env, args.idle, "restart"))
            again = sum(1 for _ in (folder / "var" / "outbox").rglob("*") if _.is_file())
            if again != sent:
                raise SystemExit(f"the restart wrote {again - sent} more messages")
    print(f"seed ledger, embedded defaults, {args.runs} runs, medians ({sent} messages caught up)")
    for case, runs in results.items():
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(
            f"{case:>9}: READY {median['ready_s']:.2f} s, first tick done "
            f"{median['first_tick_s']:.2f} s, stop {median['stop_s']:.2f} s; idle RSS "
            f"{median['rss_mib']:.0f} MiB (peak {median['peak_mib']:.0f}), "
            f"{median['workers']:.0f} render workers {median['workers_rss_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
