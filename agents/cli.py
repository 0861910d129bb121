"""The ``appservice-streams`` command.

appservice-streams kafka start|stop|status|reset   local KRaft broker (127.0.0.1; --brokers 3: a cluster)
appservice-streams worker --registrations DIR      run a worker
appservice-streams produce [FILE]                  JSON lines → matrix.events
appservice-streams status [--worker HOST:PORT]...  every appservice across the workers
appservice-streams ingest --registration FILE      a homeserver's appservice transactions → matrix.events
appservice-streams demo                            everything, end to end
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from agents.fatal import EXIT_CODE as EXIT_RESTART
from streams.errors import (
    AppserviceStreamsError,
    BadRecord,
    BrokerLostData,
    ConfigError,
    InfrastructureError,
    InvariantBroken,
    KafkaUnavailable,
)
from streams.registration import Registration

if TYPE_CHECKING:
    from mode import Worker

    from agents.local_cluster import LocalCluster
    from agents.local_kafka import LocalKafka

log = logging.getLogger("appservice_streams")

# The exception tree (streams.errors) mapped to exit codes, first match wins. 2 is
# what a restart cannot mend (deploy/systemd's RestartPreventExitStatus=2); 70 is
# a running worker ending itself so the next owner redoes its work (agents.fatal).
EXIT_CODES: tuple[tuple[type[AppserviceStreamsError], int], ...] = (
    (ConfigError, 2),  # a setting or file is wrong; the message names it
    # At start-up the cluster the settings name does not answer: most often a broker still starting or
    # restarting, which a restart of the worker does mend (EX_UNAVAILABLE; systemd restarts it, not exit 2).
    (KafkaUnavailable, 69),
    (BrokerLostData, 2),  # start once with --reset-state
    (InfrastructureError, 1),  # Kafka refused or did not acknowledge; the development broker failed
    (InvariantBroken, EXIT_RESTART),
)


def exit_code(exc: AppserviceStreamsError) -> int:
    """The exit code for ``exc`` (``EXIT_CODES``); 1 for a kind not listed."""
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), 1)


def _fail(command: str, exc: AppserviceStreamsError) -> int:
    """Report ``exc`` as one line on stderr; its exit code."""
    print(f"appservice-streams {command}: {exc}", file=sys.stderr)
    return exit_code(exc)


def _kafka(args: argparse.Namespace) -> int:
    from agents.local_cluster import LocalCluster
    from agents.local_kafka import LocalKafka

    single = args.brokers == 1
    broker = (
        LocalKafka(root=Path(args.home), port=args.port, controller_port=args.port + 1)
        if single
        else LocalCluster(root=Path(args.home), port=args.port, brokers=args.brokers)
    )
    name = "kafka" if single else "kafka cluster"
    try:
        if args.action == "start":
            broker.start()
            size = "" if single else f" of {args.brokers} brokers"
            print(f"{name}{size} running on {broker.bootstrap}")
        elif args.action == "stop":
            broker.stop()
            print(f"{name} stopped")
        elif args.action == "reset":
            broker.reset()
            print(f"{name} stopped and its data deleted")
        else:
            return _kafka_status(broker)
    except AppserviceStreamsError as exc:
        return _fail(f"kafka {args.action}" + ("" if single else f" --brokers {args.brokers}"), exc)
    return 0


def _kafka_status(broker: LocalKafka | LocalCluster) -> int:
    """Print the broker's or cluster's state as a sentence; 0 when everything runs."""
    from agents.local_cluster import LocalCluster, describe

    if isinstance(broker, LocalCluster):
        statuses = broker.status()
        print(describe(statuses, broker.home))
        return 0 if all(s.running for s in statuses) else 1
    status = broker.status()
    if status.running:
        print(f"kafka running on 127.0.0.1:{status.port} (pid {status.pid})")
    elif status.answering:
        print(f"kafka not started from {broker.home}, but 127.0.0.1:{status.port} answers (another process)")
    else:
        print(f"kafka not running (127.0.0.1:{status.port})")
    return 0 if status.running else 1


def _worker(args: argparse.Namespace) -> int:
    from streams.registration import load_registrations
    from streams.settings import from_environment

    try:
        settings = from_environment(
            Path(args.registrations),
            server_name=args.server_name,
            app_id=args.app_id,
            bootstrap_servers=args.bootstrap_servers,
            data_dir=Path(args.data_dir) if args.data_dir else None,
            start_from="earliest" if args.from_beginning else None,
        )
        registrations = load_registrations(settings.registrations_dir)
        from agents.logs import hide

        hide([settings.kafka_security.sasl_password, *(t for r in registrations for t in (r.as_token, r.hs_token))])
        from agents.appservice_http import appservice_tls
        from agents.http_api import bind
        from agents.topics import ensure_worker_topics

        # Everything local is checked before Kafka is touched.
        appservice_tls(settings.appservice_ca_file)
        http_listener = bind(settings.http_host, settings.http_port)
        settings = ensure_worker_topics(settings)  # with the replication chosen for this cluster
        from agents.state_check import check_local_state

        check_local_state(settings, reset=args.reset_state)  # built from the topics the broker has?
    except AppserviceStreamsError as exc:
        return _fail("worker", exc)
    import faust

    from agents.local_state import open_tables, stopped_cleanly
    from agents.worker import create_pipeline

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    pipeline = create_pipeline(settings, registrations, http_listener)
    open_tables(settings.state_dir, Path(pipeline.app.conf.tabledir))
    _warn_if_readable_by_others(registrations)
    import faust.transport.drivers.aiokafka

    from agents.logs import collapse_library_repeats

    collapse_library_repeats()  # a broker outage floods the log (docs/decisions/collapse-client-log-repeats.md)
    for r in registrations:
        log.info("appservice %s: %s", r.id, "url: null, nothing is sent" if r.url is None else r.url)
    from agents.logs import logging_config

    # Faust sets logging up again when it starts: with the same configuration, so its lines look like ours.
    worker = faust.Worker(
        pipeline.app,
        loglevel=args.log_level,
        logging_config=logging_config(settings.log_format, args.log_level),
        quiet=True,
        redirect_stdouts=False,
    )
    pipeline.health.loop = worker.loop  # the loop the liveness probe asks to answer
    if pipeline.metrics_server is not None:
        import prometheus_client

        # No `_created` series beside every counter and histogram: a third of a scrape's output and
        # time, on the worker's interpreter (docs/decisions/prometheus-created-series.md).
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        try:
            pipeline.metrics_server.start()  # before the worker: a wedged start-up is visible too
        except ConfigError as exc:
            return _fail("worker", exc)
    try:
        run_faust_worker(worker)  # exits the process (SystemExit)
    finally:
        # Every agent has stopped: no table write can follow. A run that ends
        # any other way (SIGKILL, fatal) leaves no mark (agents.local_state).
        if pipeline.changelog.everything_acknowledged():
            stopped_cleanly(settings.state_dir)
        else:
            log.warning("changelog records unacknowledged at shutdown: local tables are rebuilt at the next start")


# mode's Worker exits with this when a service crashed or its start raised (mode.worker.EX_FAILURE).
_FAUST_CRASHED = 1


def run_faust_worker(worker: Worker) -> NoReturn:
    """Run ``worker`` (a ``faust.Worker``) until it ends, exiting 70 instead of mode's 1 on a crash.

    mode logs the crash with its traceback, stops every service (Faust commits
    only what the ack filter let through: records processed) and exits 1, a
    code no supervisor is told to restart. A crash there is a Kafka client
    giving up (a node down at start-up, say), which a restart mends like any
    other exit 70: the restart resumes from the committed offsets.

    Raises:
        SystemExit: always; 70 where mode's was 1.
    """
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code != _FAUST_CRASHED:
            raise
        log.critical("the Faust worker crashed (the error is logged above): exiting %d, restart me", EXIT_RESTART)
        raise SystemExit(EXIT_RESTART) from exc
    raise SystemExit(0)  # pragma: no cover - execute_from_commandline always exits


def _warn_if_readable_by_others(registrations: Sequence[Registration]) -> None:
    """A registration file holds an appservice's two tokens: say so when any local user can read it."""
    for registration in registrations:
        try:
            mode = registration.source.stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:
            log.warning(
                "registration %s is readable by every user of this machine and holds tokens: chmod o-r it",
                registration.source,
            )


def _produce(args: argparse.Namespace) -> int:
    import orjson

    from agents.producer import EventProducer
    from streams.kafka_settings import security_from_environment

    bootstrap = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    name = args.file or "<stdin>"
    try:
        security = security_from_environment(os.environ)  # KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_*, KAFKA_SASL_*
    except ConfigError as exc:
        return _fail("produce", exc)
    try:
        source = open(args.file, "rb") if args.file else sys.stdin.buffer  # noqa: SIM115
    except OSError as exc:
        print(f"appservice-streams produce: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    producer = EventProducer(bootstrap, args.topic, security, **{"message.timeout.ms": int(args.timeout * 1000)})
    sent = refused = 0
    try:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
                if isinstance(doc, dict) and "v" in doc:
                    producer.send_envelope(line.strip())
                elif isinstance(doc, dict):
                    producer.send_event(doc)
                else:
                    raise BadRecord("line is not a JSON object")
                sent += 1
            except (orjson.JSONDecodeError, BadRecord) as exc:
                refused += 1
                print(f"{name}:{number}: refused: {exc}", file=sys.stderr)
            if sent and sent % 10_000 == 0:
                print(f"{sent} records queued", file=sys.stderr)
        producer.flush(args.timeout + 5)
    except InfrastructureError as exc:
        print(f"appservice-streams produce: Kafka at {bootstrap} did not take the records: {exc}", file=sys.stderr)
        return exit_code(exc)
    finally:
        if args.file:
            source.close()
    print(f"{sent} records produced to {args.topic}" + (f", {refused} refused" if refused else ""), file=sys.stderr)
    return 1 if refused else 0


def _status(args: argparse.Namespace) -> int:
    import time

    import orjson

    from agents.status import as_json, collect, render, unowned

    missing: list[str] | None = None
    if args.registrations:
        from streams.registration import load_registrations

        try:
            expected = [str(r.id) for r in load_registrations(Path(args.registrations)) if r.url is not None]
        except ConfigError as exc:
            return _fail("status", exc)
    workers = args.worker or [
        f"{os.environ.get('APPSERVICE_STREAMS_METRICS_HOST') or '127.0.0.1'}:"
        f"{os.environ.get('APPSERVICE_STREAMS_METRICS_PORT') or 9109}"
    ]
    rows, worker_rows = collect(workers)
    if args.registrations:
        missing = unowned(rows, expected)
    if args.json:
        print(orjson.dumps(as_json(rows, worker_rows, missing), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(rows, worker_rows, time.time(), missing))
    return 0 if all(w.answered for w in worker_rows) and not missing else 1


def _listen_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _ingest(args: argparse.Namespace) -> int:
    import asyncio
    import re
    import secrets

    import yaml

    from streams.ingest import firehose_registration
    from streams.kafka_settings import security_from_environment
    from streams.registration import load_registration
    from streams.settings import input_partitions

    if args.print_registration:
        if not args.url:
            print(
                "appservice-streams ingest: --print-registration needs --url (where the homeserver reaches the ingest)",
                file=sys.stderr,
            )
            return 2
        try:
            re.compile(args.claim_users or "")
        except re.error as exc:
            print(
                f"appservice-streams ingest: --claim-users {args.claim_users!r} is not a regex: {exc}", file=sys.stderr
            )
            return 2
        doc = firehose_registration(
            args.id, args.url, secrets.token_urlsafe(32), secrets.token_urlsafe(32), args.claim_users
        )
        print(yaml.safe_dump(doc, sort_keys=False), end="")
        return 0
    from agents.ingest import IngestConfig, ensure_ingest_topics, serve
    from agents.listener import listen

    try:
        if not args.registration:
            raise ConfigError("--registration FILE is required (write one with --print-registration)")
        host, port = _listen_address(args.listen)
        registration = load_registration(Path(args.registration))
        from agents.logs import hide

        hide([registration.as_token, registration.hs_token, os.environ.get("KAFKA_SASL_PASSWORD")])
        config = IngestConfig(
            registration=registration,
            bootstrap_servers=args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092",
            topic=args.topic,
            input_partitions=input_partitions(os.environ),
            host=host,
            port=port,
            max_body_bytes=args.max_body_bytes,
            security=security_from_environment(os.environ),
            room_events=not args.without_room_events,
        )
        # everything local is checked before Kafka is touched
        listener = listen(host, port, purpose="listen on", setting="--listen")
        ensure_ingest_topics(config)
    except AppserviceStreamsError as exc:
        return _fail("ingest", exc)
    try:
        asyncio.run(serve(config, listener))
    except InfrastructureError as exc:
        return _fail("ingest", exc)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agents.demo import run_demo

    return run_demo(Path(args.home), events=args.events)


def _bench(argv: list[str]) -> int:
    """Forward to the benchmark, a tool of the source tree (``bench/``), not part of the installed package."""
    import importlib

    checkout = Path.cwd()
    if (checkout / "bench" / "cli.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        bench_cli = importlib.import_module("bench.cli")
    except ModuleNotFoundError:
        print(
            "appservice-streams bench: the benchmark runs from a source checkout (its bench/ folder): "
            "cd into it and run `appservice-streams bench` or `python -m bench`",
            file=sys.stderr,
        )
        return 2
    return int(bench_cli.main(argv))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("appservice-streams")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appservice-streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="run the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status", "reset"])
    kafka.add_argument("--home", default=".", help="folder for .kafka/: jars, data, logs (default: .)")
    kafka.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("APPSERVICE_STREAMS_KAFKA_PORT") or 9092),
        help="broker port; the controller uses the next one (default APPSERVICE_STREAMS_KAFKA_PORT or 9092);"
        " with --brokers N, node i uses port+2(i-1) and the next one",
    )
    kafka.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=1,
        help="1: one broker (default); 3: a three-node KRaft cluster under .kafka/cluster (for fault tests)",
    )
    kafka.set_defaults(run=_kafka)

    worker = sub.add_parser("worker", help="run a delivery worker")
    worker.add_argument("--registrations", required=True, help="folder of appservice registration YAML files")
    worker.add_argument("--server-name", help="the homeserver's server name (or MATRIX_SERVER_NAME)")
    worker.add_argument("--app-id", help="consumer group and topic prefix (default appservice-streams)")
    worker.add_argument("--bootstrap-servers", help="Kafka (default KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)")
    worker.add_argument("--data-dir", help="RocksDB state folder (default .data)")
    worker.add_argument(
        "--reset-state",
        action="store_true",
        help="delete the local state folder and rebuild it from the broker (after the broker lost its data)",
    )
    worker.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new app id reads the input topic's whole history (default APPSERVICE_STREAMS_START_FROM or latest)",
    )
    worker.add_argument(
        "--log-level", default="info", type=str.lower, choices=["debug", "info", "warning", "error", "critical"]
    )
    worker.set_defaults(run=_worker)

    produce = sub.add_parser("produce", help="produce JSON lines (events or envelopes) to the input topic")
    produce.add_argument("file", nargs="?", help="JSON lines file (default: standard input)")
    produce.add_argument("--topic", default="matrix.events")
    produce.add_argument("--bootstrap-servers")
    produce.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for Kafka to take each record (default 30)"
    )
    produce.set_defaults(run=_produce)

    status = sub.add_parser("status", help="every appservice across the workers, from their metrics listeners")
    status.add_argument(
        "--worker",
        action="append",
        help="a worker's metrics listener, HOST:PORT or URL; repeat for each worker "
        "(default APPSERVICE_STREAMS_METRICS_HOST:…_PORT or 127.0.0.1:9109)",
    )
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    status.add_argument(
        "--registrations", help="folder of registrations: name the appservices no worker exports (exit 1 if any)"
    )
    status.set_defaults(run=_status)
    ingest = sub.add_parser("ingest", help="receive a homeserver's appservice transactions into the input topic")
    ingest.add_argument("--registration", help="the firehose registration the homeserver loads (YAML)")
    ingest.add_argument("--listen", default="127.0.0.1:8010", help="HOST:PORT to serve on (default 127.0.0.1:8010)")
    ingest.add_argument("--bootstrap-servers", help="Kafka (default KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)")
    ingest.add_argument("--topic", default="matrix.events", help="the input topic (default matrix.events)")
    ingest.add_argument("--max-body-bytes", type=int, default=16 << 20, help="larger bodies get 413 (default 16 MiB)")
    ingest.add_argument(
        "--without-room-events",
        action="store_true",
        help="leave room events out (the Synapse feed module publishes them): ephemeral, to-device, device data only",
    )
    ingest.add_argument("--print-registration", action="store_true", help="print a new firehose registration and exit")
    ingest.add_argument("--url", help="with --print-registration: the URL the homeserver reaches the ingest at")
    ingest.add_argument("--id", default="appservice-streams-ingest", help="with --print-registration: its id")
    ingest.add_argument(
        "--claim-users",
        metavar="REGEX",
        help="with --print-registration: a users namespace (lets the as_token act as every matching local user)",
    )
    ingest.set_defaults(run=_ingest)

    sub.add_parser("bench", help="the benchmark: appservice-streams bench --help")

    demo = sub.add_parser("demo", help="broker + worker + a demo appservice + sample events, end to end")
    demo.add_argument("--home", default=".")
    demo.add_argument("--events", type=int, default=250)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark parses its own flags
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    import logging.config

    from agents.logs import logging_config
    from streams.settings import log_format

    try:
        logging.config.dictConfig(logging_config(log_format(os.environ)))
    except ConfigError as exc:
        print(f"appservice-streams: {exc}", file=sys.stderr)
        return 2
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
