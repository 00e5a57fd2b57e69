"""A real Prometheus server (Debian package `prometheus`) on a free loopback port, for tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from otelflow.testing.process import free_port


class PrometheusServer:
    """`with PrometheusServer(config_yaml, flags=[...]) as prom:`; `prom.url`, `prom.query()`.

    `config_yaml` may use `{rules}` for the path of `rules_text` written next to it.
    """

    def __init__(self, config_yaml: str = "global:\n  scrape_interval: 1m\n",
                 flags: tuple[str, ...] = (), rules_text: str | None = None):
        self.binary = shutil.which("prometheus")
        assert self.binary, "the Debian `prometheus` package is required (.ci/run installs it)"
        self._dir = tempfile.TemporaryDirectory(prefix="prometheus-")
        root = Path(self._dir.name)
        rules = root / "rules.yaml"
        if rules_text is not None:
            rules.write_text(rules_text)
        self.config = root / "prometheus.yml"
        self.config.write_text(config_yaml.replace("{rules}", str(rules)))
        self.log_path = root / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.flags = flags
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> PrometheusServer:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config}",
             f"--storage.tsdb.path={Path(self._dir.name) / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", *self.flags],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._ready():
            assert self.proc.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/<path>; returns the decoded body (errors included, not raised)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            return json.load(exc)

    def query(self, promql: str) -> list[dict]:
        body = self.api("query", query=promql)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
        self._dir.cleanup()
