"""Process self-metrics with the Go collector's names, read from psutil at scrape time
(no background task): otelcol_process_memory_rss, otelcol_process_cpu_seconds,
otelcol_process_uptime."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class ProcessCollector(Collector):
    def __init__(self) -> None:
        self._process = psutil.Process()
        self._started = time.time()

    def collect(self) -> Iterator:
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        yield GaugeMetricFamily("otelcol_process_memory_rss",
                                "Total physical memory (resident set size) in bytes.", value=rss)
        yield CounterMetricFamily("otelcol_process_cpu_seconds",
                                  "Total CPU user and system time in seconds.",
                                  value=cpu.user + cpu.system)
        yield CounterMetricFamily("otelcol_process_uptime", "Uptime of the process in seconds.",
                                  value=time.time() - self._started)
