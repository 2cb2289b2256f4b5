"""``kafkaupstream-harness demo``: broker, runner and gateway on one terminal, records shown live.

Startup order is broker, record followers, runner, gateway; shutdown runs backwards: the gateway
stops taking requests, the runner gets SIGTERM (as APISIX sends it) and flushes into the still
running broker, the followers stop, the broker stops, the temporary directory goes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from confluent_kafka import KafkaException

from harness.broker import BrokerError, EmbeddedBroker
from harness.consume import ConsumeError, follow, format_record
from harness.demo.ports import PortUnavailable, ensure_port_free
from harness.demo.routes import PATH, TOPICS, curl_examples, describe_routes, standalone_yaml
from harness.gateway import GatewayThread, Timing
from harness.http11 import Request
from harness.pipeline import Answer
from harness.replay.recorder import RecordingWriter, from_gateway
from harness.routes import GatewayConfig, RouteConfigError, load_config

#: What APISIX sets when it spawns the runner (``ext-plugin.cmd``).
CONF_EXPIRE_TIME = "3600"
_BROKER_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    host: str = "127.0.0.1"
    http_port: int = 9080
    broker_port: int = 9092
    #: The user's route files, served instead of the generated ones.
    routes: tuple[str, ...] = ()
    #: Where the runner's and broker's logs go; None: the temporary directory (removed on exit).
    log_dir: str | None = None
    #: Write every exchange to this recording (``kafkaupstream-harness replay`` reads it).
    record: str | None = None
    keep_secrets: bool = False


class StartupError(RuntimeError):
    """The demo could not start; the message says what to change."""


class _Interrupted(Exception):
    """A stop was asked for while the demo was still starting."""


class Console:
    """Whole lines to one stream from any thread, flushed at once (the output is watched live)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _runner_command() -> list[str]:
    """``kafkaupstream run`` from this interpreter's environment, as ``ext-plugin.cmd`` says it."""
    script = Path(sys.executable).with_name("kafkaupstream")
    command = (
        [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "kafkaupstream"]
    )
    # If the demo dies without cleaning up, the runner gets the SIGTERM it would have sent.
    # PDEATHSIG follows the forking *thread*, so only the main thread may use it.
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    return [*command, "run"]


class RunnerChild:
    """The runner process: APISIX's two environment variables, its own process group."""

    def __init__(self, socket_path: Path, log_path: Path) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.left_socket = False

    def start(self, timeout: float = 15.0) -> None:
        env = {
            **os.environ,
            "APISIX_LISTEN_ADDRESS": f"unix:{self.socket_path}",
            "APISIX_CONF_EXPIRE_TIME": CONF_EXPIRE_TIME,
        }
        with open(self.log_path, "ab") as log:
            # Its own group: Ctrl-C reaches the demo only, and the runner gets SIGTERM from us.
            self.proc = subprocess.Popen(
                _runner_command(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise StartupError(
                    f"the runner exited with code {self.proc.returncode} before it listened; "
                    f"its log ({self.log_path}):\n{_tail(self.log_path)}"
                )
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(str(self.socket_path))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"the runner did not listen on {self.socket_path} within {timeout}s; "
                        f"its log ({self.log_path}):\n{_tail(self.log_path)}"
                    ) from None
                time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` (APISIX allows 1 s; a demo can be patient)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Its worker processes share its group: none may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.left_socket = self.socket_path.exists()
        return self.proc.returncode


class Followers:
    """One thread per topic printing every record from offset 0 (the demo's topics start empty)."""

    def __init__(self, bootstrap: str, topics: Sequence[str], console: Console) -> None:
        self._bootstrap = bootstrap
        self._console = console
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(t,), name=f"follow-{t}", daemon=True)
            for t in topics
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, topic: str) -> None:
        try:
            for record in follow(self._bootstrap, topic, from_beginning=True, stop=self._stop):
                self._console.line(f"kafka  {format_record(record)}")
        except (ConsumeError, KafkaException) as exc:
            if not self._stop.is_set():
                self._console.line(f"kafka  (stopped following {topic}: {exc})")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)


def _one_line(body: bytes, limit: int = 200) -> str:
    text = " ".join(body.decode("utf-8", "replace").split()) or "(no body)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _client_url(host: str, port: int) -> str:
    """A URL a local client can use: a wildcard listen address becomes 127.0.0.1."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Demo:
    """The running pieces; :meth:`start` registers each one's cleanup on ``stack``."""

    def __init__(self, options: DemoOptions, console: Console, stop: threading.Event) -> None:
        self.options = options
        self.console = console
        self.stop_requested = stop
        self.broker: EmbeddedBroker | None = None
        self.runner: RunnerChild | None = None
        self.gateway: GatewayThread | None = None
        self.config: GatewayConfig | None = None
        self.recording: RecordingWriter | None = None
        self.workdir = Path()
        self.log_dir = Path()

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise _Interrupted

    def start(self, stack: contextlib.ExitStack) -> None:
        opts = self.options
        ensure_port_free(opts.host, opts.http_port, what="HTTP gateway", option="--http-port")
        ensure_port_free(_BROKER_HOST, opts.broker_port, what="broker", option="--broker-port")
        user_config = load_config(opts.routes) if opts.routes else None
        # Short and fresh: unix socket paths are limited to ~107 bytes, and nothing stale is in it.
        self.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ku-demo-")))
        self.log_dir = Path(opts.log_dir) if opts.log_dir else self.workdir
        self.log_dir.mkdir(parents=True, exist_ok=True)

        broker = EmbeddedBroker(
            TOPICS, port=opts.broker_port or None, log_path=self.log_dir / "broker.log"
        )
        stack.callback(broker.stop)
        broker.start()
        self.broker = broker
        self._check_stop()

        followers = Followers(broker.bootstrap, list(TOPICS), self.console)
        stack.callback(followers.stop)
        followers.start()

        if user_config is None:
            routes_file = self.workdir / "apisix.yaml"
            routes_file.write_text(standalone_yaml(broker.bootstrap), encoding="utf-8")
            user_config = load_config(routes_file)
        self.config = user_config

        runner = RunnerChild(self.workdir / "runner.sock", self.log_dir / "runner.log")
        stack.callback(runner.stop)
        self.runner = runner
        runner.start()
        self._check_stop()

        if opts.record:
            self.recording = RecordingWriter(
                opts.record, source="demo", keep_secrets=opts.keep_secrets
            )
            stack.callback(self.recording.close)
        gateway = GatewayThread(
            self.config,
            str(runner.socket_path),
            host=opts.host,
            port=opts.http_port,
            on_exchange=self._show_exchange,
        )
        try:
            gateway.start()
        except OSError as exc:
            gateway.stop()
            raise StartupError(
                f"the HTTP gateway cannot listen on {opts.host}:{opts.http_port} ({exc}); "
                "change it with --host / --http-port"
            ) from None
        stack.callback(gateway.stop)
        self.gateway = gateway

    def _show_exchange(self, request: Request, answer: Answer, timing: Timing) -> None:
        self.console.line(
            f"http   {request.method} {request.target} -> {answer.status} "
            f"{_one_line(answer.body)} ({timing.total_ms:.1f} ms)"
        )
        if self.recording is not None:
            self.recording.write(from_gateway(request, answer, timing))

    def banner(self) -> None:
        assert self.broker is not None and self.runner is not None and self.gateway is not None
        assert self.runner.proc is not None and self.config is not None
        base = _client_url(self.options.host, self.gateway.port)
        topics = ", ".join(f"{t} ({n} partition{'s' if n > 1 else ''})" for t, n in TOPICS.items())
        say = self.console.line
        say("kafkaupstream demo: one HTTP gateway playing APISIX, the runner, a Kafka broker")
        say(
            f"  broker   Tansu at bootstrap.servers={self.broker.bootstrap}, topics {topics}"
            f"  [pid {self.broker.pid}]"
        )
        say(
            f"  runner   kafkaupstream run, APISIX_LISTEN_ADDRESS=unix:{self.runner.socket_path}"
            f"  [pid {self.runner.proc.pid}]"
        )
        say(f"  gateway  {base}  [pid {os.getpid()}]")
        for i, line in enumerate(describe_routes(self.config)):
            say(f"  {'routes' if i == 0 else '':<8} {line}")
        say(f"  logs     {self.log_dir / 'runner.log'}, {self.log_dir / 'broker.log'}")
        if self.recording is not None:
            say(
                f"  record   every exchange to {self.recording.path} (kafkaupstream-harness replay)"
            )
        if self.options.routes:
            say(
                f"  (routes from {', '.join(self.options.routes)}; records are shown for the "
                f"topics {', '.join(TOPICS)})"
            )
            first = self.config.routes[0].uris[0].rstrip("*") if self.config.routes else PATH
        else:
            say("  (the generated apisix.yaml: kafkaupstream-harness demo --print-routes)")
            say()
            say("Try it:")
            for example in curl_examples(base):
                say(f"  # {example.what}")
                say(f"  {example.command}")
            first = PATH
        say()
        say(
            f"Ready: {base}{first} -- answers (http) and records (kafka) show up below as they "
            "happen; Ctrl-C stops everything."
        )

    def watch(self) -> str | None:
        """Until a stop is asked for (None) or a child died (what happened)."""
        assert self.broker is not None and self.runner is not None
        assert self.runner.proc is not None
        while not self.stop_requested.wait(0.2):
            if not self.broker.running:
                log = self.log_dir / "broker.log"
                return f"the broker exited unexpectedly; its log ({log}):\n{_tail(log)}"
            code = self.runner.proc.poll()
            if code is not None:
                return (
                    f"the runner exited unexpectedly with code {code}; its log:\n"
                    f"{_tail(self.runner.log_path)}"
                )
        return None


def run_demo(
    options: DemoOptions,
    stop: threading.Event,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Run until ``stop`` is set (by the caller's SIGINT/SIGTERM handlers); 0 on a clean stop."""
    console = Console(out)
    demo = Demo(options, console, stop)
    status = 0
    with contextlib.ExitStack() as stack:
        try:
            demo.start(stack)
        except _Interrupted:
            return 0
        except (StartupError, PortUnavailable, BrokerError, RouteConfigError, OSError) as exc:
            print(f"kafkaupstream-harness demo: {exc}", file=err)
            return 1
        demo.banner()
        problem = demo.watch()
        if problem is not None:
            print(f"kafkaupstream-harness demo: {problem}", file=err)
            status = 1
        console.line("Stopping: gateway, runner (SIGTERM), broker ...")
    runner = demo.runner
    assert runner is not None and runner.proc is not None
    if runner.proc.returncode != 0 and status == 0:
        print(
            f"kafkaupstream-harness demo: the runner exited with code {runner.proc.returncode} "
            "on SIGTERM (expected 0)",
            file=err,
        )
        status = 1
    if runner.left_socket:
        print(
            f"kafkaupstream-harness demo: the runner left its socket {runner.socket_path}", file=err
        )
    console.line("Stopped." if status == 0 else "Stopped, with the errors above.")
    return status
