"""Rendering the shipped templates: what one message costs, as the sending path renders it.

    .venv/bin/python -m bench.render [--rounds 5]

Imports the bundled ledger into a scratch store, builds the letters ``reminder check``
renders (two letters a task, one item of every kind) and the digests and escalation
lists of one day, then renders each message as ``Preparer`` does (e-mail: subject, text
and HTML; SMS; robots: subject and Markdown) ``--rounds`` times and prints the median
microseconds a message per round, with the load average (the machine is shared).

``--compare OLD_RENDER_PY`` loads another version of ``reminder/render.py`` (e.g. from
``git show HEAD~3:reminder/render.py > /tmp/render_old.py``) beside this one and
alternates them round by round, so both are measured under the same load; times are
the process's CPU time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "data" / "jiyuan-2018-ledger.txt"
CHANNELS = {
    "email": ("subject", "text", "html"),
    "sms": ("sms",),
    "wecom": ("subject", "md"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reminder-bench-") as folder:
        os.environ["REMINDER_DB"] = f"sqlite:///{folder}/render.db"
        os.environ["REMINDER_CONFIG"] = str(ROOT / "config")
        reminder = Path(sys.executable).with_name("reminder")
        subprocess.run([str(reminder), "import", str(SEED)], check=True, capture_output=True)
        measure(args.rounds, args.compare)


def measure(rounds: int, compare: Path | None) -> None:
    from reminder.app import App  # noqa: PLC0415 - after REMINDER_* are set
    from reminder.check import letter_samples, report_samples  # noqa: PLC0415
    from reminder.context import report_context  # noqa: PLC0415
    from reminder.letters import LetterContext  # noqa: PLC0415
    from reminder.store.overview import digest_inputs  # noqa: PLC0415
    from reminder.store.tasks import ledger_facts  # noqa: PLC0415

    app = App()
    settings = app.config.settings
    day = dt.date(2018, 6, 25)
    with app.store.read() as session:
        inputs = digest_inputs(session)
    assert inputs is not None
    context = LetterContext(
        day=day,
        title=inputs.ledger.title,
        year=inputs.ledger.year,
        office=settings.office,
        contacts=app.contacts,
        calendar=app.planning.calendar,
        reminded={},
    )
    payloads = [("letter", p) for _, p in letter_samples(ledger_facts(inputs.ledger), context)]
    payloads += report_samples(inputs, app.planning, [day])
    messages = []
    for kind, payload in payloads:
        recipient = str(payload.get("unit") or "督查室")
        for channel, parts in CHANNELS.items():
            values = report_context(
                kind=kind, recipient=recipient, payload=payload, settings=settings.office
            )
            values["channel"] = channel
            messages.append((kind, values, parts))
    renderers = {"this": app.renderer}
    if compare is not None:
        spec = importlib.util.spec_from_file_location("render_compared", compare)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["render_compared"] = module
        spec.loader.exec_module(module)
        renderers["compared"] = module.Renderer()
    for renderer in renderers.values():
        for kind, values, parts in messages:  # compile every template before timing
            renderer.render(kind, values, parts)
    times: dict[str, list[float]] = {name: [] for name in renderers}
    for number in range(1, rounds + 1):
        for name, renderer in renderers.items():
            started = time.process_time()
            for kind, values, parts in messages:
                renderer.render(kind, values, parts)
            micro = (time.process_time() - started) / len(messages) * 1e6
            times[name].append(micro)
            print(f"round {number} {name}: {micro:.1f} µs a message")
    for name, found in times.items():
        print(
            f"{name}: median {statistics.median(found):.1f} µs, best {min(found):.1f} µs "
            f"a message ({len(messages)} messages a round), load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
