"""A picture of the Grafana dashboard's panels from a real run, drawn with matplotlib (not by Grafana).

Grafana itself cannot run where this was made (no Docker, and no package
registry reached here ships it), so this script:

1. runs two real workers (``appservice-streams worker`` processes) on the
   local broker, three real appservices (aiohttp, ``tests/support``), a real
   Prometheus (``prometheus`` on the PATH: Debian's package) scraping both
   workers every 2 s with the shipped alert rules, and ~40 events/s of load;
2. plays a script: ``irc`` answers 503 for a minute, then recovers; a few
   undecodable records are dead-lettered; worker 2 is paused (SIGSTOP) for
   25 s, its partitions move to worker 1 after the session timeout, then it
   comes back; a burst of 20,000 events;
3. asks that Prometheus for every target of
   ``deploy/grafana/dashboards/appservice-streams.json`` (the same PromQL,
   ``$__rate_interval`` as 30 s, ``$appservice`` as ``.*``) over the run,
   and draws each panel where the dashboard's grid puts it.

Run from the repository root, with the dev broker started and matplotlib
installed (``pip install -e '.[bench]'``)::

    .venv/bin/python deploy/grafana/snapshot.py --out docs/dashboard.png

Each run leaves its folder (printed first: the Prometheus data, the workers'
logs, ``run.json`` with the run's start, end and events); ``--render-only
http://127.0.0.1:9090 --run FOLDER/run.json`` draws again from a Prometheus
started on that data (without ``--run``: the last ``--minutes``). Not
installed with the package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DASHBOARD = ROOT / "deploy/grafana/dashboards/appservice-streams.json"
RATE_INTERVAL = "30s"
SCRAPE_S = 2
APPSERVICES = ("irc", "signal", "sms")


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as response:
        doc = json.load(response)
    if doc["status"] != "success":
        raise RuntimeError(f"{expr}: {doc}")
    return list(doc["data"]["result"])


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def render(prometheus: str, start: float, end: float, out: Path, marks: list[tuple[float, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(16, rows * 0.5), dpi=72)
    fig.patch.set_facecolor("#111217")
    grid = fig.add_gridspec(rows, 24, hspace=7.0, wspace=3.0, left=0.04, right=0.99, top=0.95, bottom=0.05)
    step = max(SCRAPE_S, (end - start) / 300)
    fig.suptitle(
        f"{dashboard['title']}: the Grafana dashboard's panels and PromQL, evaluated by a real Prometheus over a"
        f" {round((end - start) / 60)}-minute run, drawn with matplotlib (not Grafana)",
        color="#d8d9da",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    for panel in panels:
        pos = panel["gridPos"]
        ax = fig.add_subplot(grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]])
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        ax.set_title(panel["title"], color="#d8d9da", fontsize=9, loc="left", pad=9)
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$appservice", ".*")
            for series in query_range(prometheus, expr, start, end, step):
                xs = [(float(t) - start) / 60 for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ys = [0.0 if y != y else y for y in ys]  # NaN (no rate yet) as 0
                ax.plot(xs, ys, linewidth=1.2, label=legend(target["legendFormat"], series["metric"]))
        for number, (at, _) in enumerate(marks, 1):
            ax.axvline((at - start) / 60, color="#8e96a3", linewidth=0.7, linestyle=":")
            ax.annotate(
                str(number),
                ((at - start) / 60, 1),
                xycoords=("data", "axes fraction"),
                color="#c8ccd2",
                fontsize=6,
                ha="center",
                va="bottom",
            )
        ax.set_xlim(0, (end - start) / 60)
        ax.xaxis.set_major_locator(MultipleLocator(1))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f} min"))
        if unit == "s":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g} s"))
        elif unit == "reqps":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}/s"))
        ax.grid(color="#2c3235", linewidth=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#d8d9da")
    if marks:
        text = "   ".join(f"{n} ({(at - start) / 60:.1f} min): {what}" for n, (at, what) in enumerate(marks, 1))
        fig.text(0.01, 0.01, "dotted lines: " + text, color="#c8ccd2", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=fig.get_facecolor())
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def start_prometheus(home: Path, targets: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    from tests.support.worker_process import free_port

    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not on the PATH (Debian: apt-get install prometheus)")
    port = free_port()
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", home / "alerts.yml")
    (home / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
                "rule_files": ["alerts.yml"],
                "scrape_configs": [{"job_name": "appservice-streams", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(home / "prometheus.log", "wb"),  # noqa: SIM115 - the child owns it
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=1)
            return process, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"prometheus did not start: {(home / 'prometheus.log').read_text()[-2000:]}")


async def run(out: Path, bootstrap: str) -> None:
    from confluent_kafka import Producer

    from agents.producer import EventProducer
    from agents.topics import delete_prefixed
    from tests.integration.events import message
    from tests.support.recording_appservice import RecordingAppservice
    from tests.support.worker_process import WorkerProcess, free_port, write_registration

    home = Path(tempfile.mkdtemp(prefix="dashboard-snapshot-"))
    run_id = uuid.uuid4().hex[:8]
    registrations = home / "registrations"
    sinks = {}
    for appservice_id in APPSERVICES:
        sink = RecordingAppservice()
        await sink.start()
        write_registration(registrations, appservice_id, sink.url)
        os.chmod(registrations / f"{appservice_id}.yaml", 0o600)
        sinks[appservice_id] = sink
    env = {"APPSERVICE_STREAMS_SESSION_TIMEOUT_S": "6", "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    workers = [
        WorkerProcess(
            registrations=registrations,
            app_id=f"snapshot-{run_id}",
            input_topic=f"matrix.events.snapshot-{run_id}",
            data_dir=home / f"data-{n}",
            log_path=home / f"worker-{n}.log",
            instance=f"w{n}",
            metrics_port=free_port(),
            extra_env=env,
        )
        for n in (1, 2)
    ]
    prometheus, url = start_prometheus(home, [f"127.0.0.1:{w.metrics_port}" for w in workers])
    print(f"run folder {home}, prometheus {url}", flush=True)
    producer = EventProducer(bootstrap, workers[0].input_topic)
    marks: list[tuple[float, str]] = []
    try:
        for w in workers:
            w.start()
        began = time.time()
        n = 0

        async def load(seconds: float, per_s: int = 40) -> None:
            nonlocal n
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                for _ in range(per_s // 10):
                    appservice_id = APPSERVICES[n % len(APPSERVICES)]
                    producer.send_event(
                        message(n, sender=f"@{appservice_id}_alice:example.org", room=f"!room{n % 16}:example.org")
                    )
                    n += 1
                producer.flush()
                await asyncio.sleep(0.1)

        def mark(what: str) -> None:
            marks.append((time.time(), what))
            print(f"{time.time() - began:6.1f} s: {what}", flush=True)

        await load(45)
        mark("irc answers 503")
        sinks["irc"].fail_next(1_000_000, 503)
        await load(60)
        mark("irc back")
        sinks["irc"]._failures.clear()
        await load(15)
        raw = Producer({"bootstrap.servers": bootstrap})
        for k in range(5):
            raw.produce(workers[0].input_topic, key=f"!room{k}:example.org", value=b"not an envelope")
        raw.flush(10)
        mark("5 bad records")
        await load(15)
        mark("worker 2 paused")
        paused = workers[1].process
        assert paused is not None
        paused.send_signal(signal.SIGSTOP)
        await load(25)
        paused.send_signal(signal.SIGCONT)
        mark("worker 2 resumed")
        await load(25)
        mark("burst of 20,000 events")
        for _ in range(20_000):
            sender = f"@{APPSERVICES[n % len(APPSERVICES)]}_bob:example.org"
            producer.send_event(message(n, sender=sender, room=f"!room{n % 16}:example.org"))
            n += 1
        producer.flush()
        await load(40)
        end = time.time()
        delivered = {a: len(s.delivered_events_ids()) for a, s in sinks.items()}
        print(f"{n} events produced, delivered: {delivered}", flush=True)
        (home / "run.json").write_text(json.dumps({"start": began - 10, "end": end, "marks": marks}))
        render(url, began - 10, end, out, marks)
    finally:
        for w in workers:
            if w.process is not None:
                w.process.send_signal(signal.SIGCONT)
            w.stop()
        prometheus.terminate()
        prometheus.wait(20)
        for sink in sinks.values():
            await sink.stop()
        delete_prefixed(bootstrap, (workers[0].app_id, workers[0].input_topic))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/dashboard.png")
    parser.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('APPSERVICE_STREAMS_KAFKA_PORT', '9092')}")
    parser.add_argument("--render-only", metavar="PROMETHEUS_URL")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--run", type=Path, help="with --render-only: a run's run.json (its span and events)")
    args = parser.parse_args()
    if args.render_only and args.run:
        run_doc = json.loads(args.run.read_text())
        marks = [(at, what) for at, what in run_doc["marks"]]
        render(args.render_only.rstrip("/"), run_doc["start"], run_doc["end"], args.out, marks)
    elif args.render_only:
        end = time.time()
        render(args.render_only.rstrip("/"), end - args.minutes * 60, end, args.out, [])
    else:
        asyncio.run(run(args.out, args.bootstrap))


if __name__ == "__main__":
    main()
