"""A local single-node KRaft Kafka broker for development and tests.

The broker is a real Apache Kafka (version pinned in ``agents/kafka/pom.xml``) run from
jars that Maven resolves from Maven Central into ``<root>/.kafka/libs``. It runs
as one JVM in combined broker+controller mode, listening on 127.0.0.1 only, and
keeps all of its state under ``<root>/.kafka``::

    .kafka/libs/            runtime classpath (copied by mvn, never committed)
    .kafka/libs.stamp       sha256 of agents/kafka/pom.xml the libs were fetched for
    .kafka/server.properties
    .kafka/data/            log.dirs (KRaft metadata + topic data)
    .kafka/logs/            server.log (log4j2), broker.out, broker.err
    .kafka/broker.pid       pid of the broker JVM we started
    .kafka/lock             flock serialising start/stop across processes

Typical use::

    kafka = LocalKafka(root=Path("."))
    kafka.start()          # idempotent; returns once the broker answers
    print(kafka.bootstrap) # "127.0.0.1:9092"
    kafka.stop()

Nothing happens at import time.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.errors import LocalKafkaError

__all__ = ["BrokerStatus", "LocalKafka", "LocalKafkaError"]

log = logging.getLogger(__name__)

#: JVM options for a fast-starting dev broker on a small machine (2 cores). A
#: broker with a 512 MB heap that had served many test topics (3,900 topics,
#: 15k partitions: 150k JMX metrics) ran ~1 s full collections (87 of them, 86 s
#: in all), stopping every produce and fetch: the benchmark's drain showed a 1 s
#: gap in most runs. Hence 1 GB, and tests and benchmarks delete their topics.
#: The serial collector stays: on a clean broker G1 (Kafka's default) made the
#: drain's txn cycle slower here (p50 3.9-4.3 ms against 2.8-3.4 ms). The JIT is
#: the JVM's default (C1 then C2), as on a production broker: C1 alone
#: (``-XX:TieredStopAtLevel=1``) cost ~30 % more broker CPU under load, CPU the
#: worker shares on a small machine (docs/decisions/broker-jit.md).
JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:MaxDirectMemorySize=256m",
    "-XX:+UseSerialGC",
    "-Xss512k",
    "-Djava.awt.headless=true",
)

# The Maven project pinning Kafka's version and the broker's log4j2 configuration: package
# data, so `appservice-streams kafka start` works from a pip install as from a checkout.
KAFKA_FILES = Path(__file__).resolve().parent / "kafka"

_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
_TAIL_LINES = 40


@dataclass(frozen=True)
class BrokerStatus:
    """Snapshot of the local broker's state.

    ``running`` is true when the pid file names a live broker JVM started from
    this root; ``answering`` is true when something accepts TCP connections on
    the client port (which may be a foreign process when ``running`` is false).
    """

    running: bool
    pid: int | None
    port: int
    answering: bool

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` string for this broker."""
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class LocalKafka:
    """A single-node KRaft broker whose files all live under ``root/.kafka``.

    ``root`` is the folder that holds ``.kafka/`` (the repository root in a
    checkout, any folder after ``pip install``); the Maven project and the
    log4j2 configuration ship inside this package (``KAFKA_FILES``). ``port`` is the PLAINTEXT client port and
    ``controller_port`` the KRaft controller port, both bound to 127.0.0.1.
    """

    root: Path
    port: int = 9092
    controller_port: int = 9093
    # One node of a cluster (agents.local_cluster): its id, the controller
    # quorum, its own folder under .kafka/, the cluster's id, and what differs
    # from a lone broker (replication of Kafka's internal topics, heap).
    # The defaults are the lone broker's, whose files are unchanged.
    node_id: int = 1
    quorum_voters: str | None = None
    node_dir: str | None = None
    cluster_id: str | None = None
    extra_properties: tuple[tuple[str, str], ...] = ()
    max_heap: str = "1g"
    # More arguments to ``kafka-storage format``, e.g. ``("--add-scram",
    # "SCRAM-SHA-512=[name=worker,password=…]")``: KRaft takes SCRAM
    # credentials at format time, before any broker answers.
    format_args: tuple[str, ...] = ()

    # ------------------------------------------------------------------ paths

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` string clients should use."""
        return f"127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        """``root/.kafka``: everything the broker owns."""
        return self.root.resolve() / ".kafka"

    @property
    def pom(self) -> Path:
        """The Maven project that pins the Kafka version."""
        return KAFKA_FILES / "pom.xml"

    @property
    def log4j_config(self) -> Path:
        """The log4j2 configuration passed to the broker JVM."""
        return KAFKA_FILES / "log4j2.yaml"

    @property
    def libs_dir(self) -> Path:
        """Directory holding the broker's runtime jars."""
        return self.home / "libs"

    @property
    def node_home(self) -> Path:
        """Where this broker's own files live: ``.kafka`` for a lone broker, ``.kafka/<node_dir>`` for a node."""
        return self.home if self.node_dir is None else self.home / self.node_dir

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs``."""
        return self.node_home / "data"

    @property
    def logs_dir(self) -> Path:
        """Where server.log, broker.out and broker.err are written."""
        return self.node_home / "logs"

    @property
    def pid_file(self) -> Path:
        """Pid of the broker JVM started by :meth:`start`."""
        return self.node_home / "broker.pid"

    @property
    def properties_file(self) -> Path:
        """The generated ``server.properties``."""
        return self.node_home / "server.properties"

    @property
    def _stamp_file(self) -> Path:
        return self.home / "libs.stamp"

    # ------------------------------------------------------------------- jars

    def fetch_jars(self) -> None:
        """Resolve the broker's runtime classpath into ``.kafka/libs`` with Maven.

        Does nothing when ``.kafka/libs`` exists and its stamp file holds the
        sha256 of the current ``agents/kafka/pom.xml``; otherwise runs
        ``mvn -q -B -f agents/kafka/pom.xml dependency:copy-dependencies`` into a
        temporary directory and swaps it in.

        Raises:
            LocalKafkaError: the pom is missing, ``mvn`` is not installed, or
                Maven failed (the message names the command and shows the tail
                of its output).
        """
        with self._lock():
            self._fetch_jars_locked()

    def _fetch_jars_locked(self) -> None:
        if not self.pom.is_file():
            raise LocalKafkaError(f"Maven project not found: {self.pom}")
        digest = hashlib.sha256(self.pom.read_bytes()).hexdigest()
        if self._jars_current(digest):
            return
        self.home.mkdir(parents=True, exist_ok=True)
        staging = self.home / "libs.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(self.pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        log.info("fetching Kafka jars: %s", " ".join(cmd))
        print(
            "local_kafka: fetching Kafka jars with Maven (first run only)...",
            flush=True,
        )
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise LocalKafkaError(f"cannot run {' '.join(cmd)!r}: {exc}") from exc
        if proc.returncode != 0 or not any(staging.glob("kafka_*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise LocalKafkaError(
                f"{' '.join(cmd)!r} failed with exit code {proc.returncode}:\n" + _tail_text(proc.stdout)
            )
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        staging.rename(self.libs_dir)
        self._stamp_file.write_text(digest + "\n")
        elapsed = time.monotonic() - started
        count = sum(1 for _ in self.libs_dir.glob("*.jar"))
        log.info("fetched %d jars in %.1fs", count, elapsed)
        print(f"local_kafka: {count} jars in {self.libs_dir} ({elapsed:.1f}s)", flush=True)

    def _jars_current(self, digest: str) -> bool:
        try:
            stamp = self._stamp_file.read_text().strip()
        except FileNotFoundError:
            return False
        return stamp == digest and any(self.libs_dir.glob("kafka_*.jar"))

    # --------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float = 60) -> None:
        """Start the broker (fetching jars and formatting storage if needed).

        Idempotent: if the broker we started earlier is still alive with the
        same ports, only waits until it answers. If it runs with the same ports
        but an outdated ``server.properties`` (this module changed), it is
        restarted. Returns once a metadata request on ``127.0.0.1:port``
        succeeds.

        Raises:
            LocalKafkaError: jars could not be fetched; the port or controller
                port is taken by a process that is not our broker; our broker
                already runs on other ports; storage formatting failed; the JVM
                could not be launched; or the broker died or did not answer
                within ``timeout_s`` (the message includes the tail of its logs).
        """
        with self._lock():
            self._fetch_jars_locked()
            pid = self._our_pid()
            running = self._read_properties()
            wanted = self._properties_text()
            if pid is not None and running != wanted:
                if _listeners(running) != _listeners(wanted):
                    raise LocalKafkaError(
                        f"the broker from {self.home} (pid {pid}) already runs with "
                        f"{_listeners(running)}, not port={self.port}, "
                        f"controller_port={self.controller_port}; stop() it first"
                    )
                log.info("server.properties changed; restarting broker pid %d", pid)
                self._stop_locked(timeout_s)
                pid = None
            if pid is None:
                self._check_ports_free()
                self._write_properties()
                self._format_storage()
                pid = self._launch()
            self._wait_ready(pid, timeout_s)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop the broker we started: SIGTERM, then SIGKILL after ``timeout_s``.

        Idempotent: does nothing (beyond removing a stale pid file) when no
        broker of ours is running.

        Raises:
            LocalKafkaError: the process survived SIGKILL or could not be
                signalled (e.g. it belongs to another user).
        """
        with self._lock():
            self._stop_locked(timeout_s)

    def reset(self) -> None:
        """Stop the broker and delete ``.kafka/data`` so the next start is fresh.

        Jars and logs are kept.

        Raises:
            LocalKafkaError: as :meth:`stop`.
        """
        with self._lock():
            self._stop_locked(30)
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def status(self) -> BrokerStatus:
        """Report whether our broker runs, its pid, and whether the port answers.

        Raises nothing.
        """
        pid = self._our_pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            port=self.port,
            answering=_port_open(self.port),
        )

    # --------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _our_pid(self) -> int | None:
        """Pid from the pid file if it is a live broker JVM of this root, else None."""
        pid = self._read_pid()
        if pid is None:
            return None
        if _alive(pid) and self._is_our_broker(pid):
            return pid
        return None

    def _is_our_broker(self, pid: int) -> bool:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False
        except OSError:
            return True  # no /proc access: trust the pid file
        args = raw.decode(errors="replace").split("\0")
        return _MAIN_CLASS in args and str(self.properties_file) in args

    def _check_ports_free(self) -> None:
        for name, port in (
            ("port", self.port),
            ("controller_port", self.controller_port),
        ):
            if _port_open(port):
                raise LocalKafkaError(
                    f"127.0.0.1:{port} ({name}) is already in use by a process that is "
                    f"not the broker started from {self.home} (no live pid in "
                    f"{self.pid_file}); stop it or choose another port"
                )

    def _read_properties(self) -> str | None:
        try:
            return self.properties_file.read_text()
        except FileNotFoundError:
            return None

    def _write_properties(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(self._properties_text())

    def _properties_text(self) -> str:
        props = {
            "node.id": str(self.node_id),
            "process.roles": "broker,controller",
            "listeners": (f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            # Static voter set: the controller endpoint comes from this file on
            # every start, so changing controller_port needs no reformat.
            "controller.quorum.voters": self.quorum_voters or f"1@127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data_dir),
            "num.partitions": "8",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a crash (SIGKILL) the restarted broker cannot re-register
            # until its old session expires: 9s by default, 4s here.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "4000",
            # Small thread pools and buffers: a dev broker on a 2-core box.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "num.replica.fetchers": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.hours": "168",
            "socket.send.buffer.bytes": "102400",
            "socket.receive.buffer.bytes": "102400",
            "socket.request.max.bytes": str(100 * 1024 * 1024),
            **dict(self.extra_properties),
        }
        text = "# Generated by agents/local_kafka.py; rewritten on every start.\n"
        return text + "".join(f"{key}={value}\n" for key, value in props.items())

    def _java_cmd(self, main_class: str, *args: str) -> list[str]:
        return [
            _java_executable(),
            *(f"-Xmx{self.max_heap}" if opt.startswith("-Xmx") else opt for opt in JVM_OPTS),
            f"-XX:ErrorFile={self.logs_dir}/hs_err_pid%p.log",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        cmd = self._java_cmd(
            _STORAGE_TOOL_CLASS,
            "format",
            "--config",
            str(self.properties_file),
            "--cluster-id",
            self.cluster_id or _random_cluster_id(),
            *self.format_args,
        )
        shown = " ".join(cmd[: len(cmd) - len(self.format_args)])  # format_args may carry passwords
        log.info("formatting storage: %s", shown)
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LocalKafkaError(f"cannot run {shown!r}: {exc}") from exc
        if proc.returncode != 0:
            raise LocalKafkaError(f"{shown!r} failed with exit code {proc.returncode}:\n" + _tail_text(proc.stdout))

    def _launch(self) -> int:
        cmd = self._java_cmd(_MAIN_CLASS, str(self.properties_file))
        log.info("starting broker: %s", " ".join(cmd))
        out_path, err_path = self.logs_dir / "broker.out", self.logs_dir / "broker.err"
        create = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        # posix_spawn rather than subprocess.Popen: the JVM must outlive us, and a
        # dropped Popen of a live child emits "ResourceWarning: subprocess N is
        # still running" (an error under pytest -W error). Zombies are reaped by
        # _alive(). Python's own fds are non-inheritable, so none leak.
        try:
            pid = os.posix_spawn(
                cmd[0],
                cmd,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(out_path), create, 0o644),
                    (os.POSIX_SPAWN_OPEN, 2, str(err_path), create, 0o644),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise LocalKafkaError(f"cannot run {' '.join(cmd)!r}: {exc}") from exc
        self.pid_file.write_text(f"{pid}\n")
        return pid

    def _wait_ready(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error = "port not open yet"
        while True:
            if not _alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    self.pid_file.unlink()
                raise LocalKafkaError(f"broker (pid {pid}) exited during startup; logs:\n{self._log_tail()}")
            if _port_open(self.port):
                error = self._metadata_error(max(1.0, min(5.0, deadline - time.monotonic())))
                if error is None:
                    log.info("broker ready on %s (pid %d)", self.bootstrap, pid)
                    return
                last_error = error
            if time.monotonic() >= deadline:
                raise LocalKafkaError(
                    f"broker (pid {pid}) did not answer on {self.bootstrap} within "
                    f"{timeout_s:g}s ({last_error}); logs:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _metadata_error(self, timeout_s: float) -> str | None:
        """Ask the broker for cluster metadata; None on success, else the error text."""
        admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap,
                "socket.connection.setup.timeout.ms": 2000,
                "log_level": 0,
            }
        )
        try:
            metadata = admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            return str(exc)
        if not metadata.brokers:
            return "metadata lists no brokers"
        return None

    def _stop_locked(self, timeout_s: float) -> None:
        pid = self._our_pid()
        if pid is None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            return
        log.info("stopping broker pid %d", pid)
        _signal(pid, signal.SIGTERM)
        if not _wait_exit(pid, timeout_s):
            log.warning("broker pid %d ignored SIGTERM for %gs; sending SIGKILL", pid, timeout_s)
            _signal(pid, signal.SIGKILL)
            if not _wait_exit(pid, 10):
                raise LocalKafkaError(f"broker pid {pid} survived SIGKILL")
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def _log_tail(self) -> str:
        parts: list[str] = []
        for name in ("broker.err", "broker.out", "server.log"):
            path = self.logs_dir / name
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                parts.append(f"--- {path} ---\n{_tail_text(text)}")
        return "\n".join(parts) or "(no log output)"


# ---------------------------------------------------------------------- helpers


def _random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's ``Uuid.randomUuid()`` it never starts with ``-`` (which the
    CLI would parse as an option).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _java_executable() -> str:
    """``$JAVA_HOME/bin/java`` if it exists, else ``java`` from ``PATH``.

    Raises:
        LocalKafkaError: no java executable was found.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        return str(Path(java_home, "bin", "java"))
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError("no java executable: set JAVA_HOME or put java on PATH")
    return java


def _listeners(properties: str | None) -> str | None:
    for line in (properties or "").splitlines():
        if line.startswith("listeners="):
            return line
    return None


def _tail_text(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaping it if it is our child)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    except OSError as exc:
        raise LocalKafkaError(
            f"cannot send {sig.name} to broker pid {pid}: {errno.errorcode.get(exc.errno or 0, exc)}"
        ) from exc


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Tiny CLI: ``python -m agents.local_kafka {start,stop,status,reset}``.

    Raises nothing; errors are printed and turned into exit code 1.
    """
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=("start", "stop", "status", "reset", "fetch-jars"))
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kafka = LocalKafka(root=args.root, port=args.port, controller_port=args.controller_port)
    try:
        if args.command == "start":
            kafka.start()
        elif args.command == "stop":
            kafka.stop()
        elif args.command == "reset":
            kafka.reset()
        elif args.command == "fetch-jars":
            kafka.fetch_jars()
        print(kafka.status())
    except LocalKafkaError as exc:
        print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
