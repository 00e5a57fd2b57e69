"""Run a collector as a subprocess from YAML text, for end-to-end tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT_RANGE = (20000, 32000)
"""Below Linux's ephemeral range (32768-60999): the local ports of a test's outgoing
connections come from there, so one of them cannot take a port before its server binds it."""
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1, never handed out twice in one test run."""
    for _ in range(1000):
        port = random.randrange(*PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class CollectorProcess:
    """`otelflow run --config <yaml>` in a subprocess; a context manager that always stops it.

    `wait_port` is a port the config listens on, polled until it accepts connections.
    """

    def __init__(self, config_yaml: str, wait_port: int | None = None,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        self._dir = tempfile.TemporaryDirectory(prefix="otelflow-")
        self.config_path = Path(self._dir.name) / "config.yaml"
        self.config_path.write_text(config_yaml)
        self.log_path = Path(self._dir.name) / "collector.log"
        self.wait_port = wait_port
        self.env = {**os.environ, **(env or {})}
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def start(self, timeout: float = 15.0) -> CollectorProcess:
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "otelflow", "run", "--config", str(self.config_path),
               *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        if self.wait_port is not None:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.logs()}")
                try:
                    wait_for_port(self.wait_port, timeout=0.2)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise
        return self

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return self.returncode or 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        self._log.close()
        return self.returncode

    def kill(self) -> int:
        return self.stop(sig=signal.SIGKILL)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._dir.cleanup()
