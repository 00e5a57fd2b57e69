"""`memory_limiter` processor: refuse data while the process uses too much memory.

Keys and semantics follow the Go collector's memorylimiterprocessor. Every `check_interval`
the process's resident memory (RSS: what the kernel or a cgroup would kill the collector for)
is compared with two limits: the hard limit (`limit_mib`, or `limit_percentage` of the total
memory, the cgroup limit when one is set) and the soft limit (hard - `spike_limit_mib`,
default 20% of the hard limit). Above the soft limit every batch is refused with a
`RetryableError`, which receivers answer with gRPC UNAVAILABLE / HTTP 503 and a retry delay.
Above the soft limit freed heap pages are handed back to the OS (`malloc_trim`) at every
check, so RSS tracks live data; above the hard limit a full garbage collection runs too.
Put it first in a pipeline.

Unlike Go, a burst cannot outrun `check_interval`: while data is accepted, `consume` also
re-checks when the last reading is older than `RECHECK_INTERVAL` (10 ms), so what arrives
between two timer checks is bounded by 10 ms of traffic rather than by the spike limit.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from pydantic import Field, model_validator

from otelflow.component import (
    Consumer,
    CreateSettings,
    Factory,
    Host,
    Kind,
    Processor,
    RetryableError,
)
from otelflow.config.types import ConfigModel, Duration
from otelflow.pdata import Batch

MIB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"
RECHECK_INTERVAL = 0.01  # seconds: the oldest reading `consume` trusts while accepting


class MemoryLimiterConfig(ConfigModel):
    check_interval: Duration = 0.0
    limit_mib: int = Field(0, ge=0)
    spike_limit_mib: int = Field(0, ge=0)  # 0: 20% of limit_mib
    limit_percentage: int = Field(0, ge=0, le=100)
    spike_limit_percentage: int = Field(0, ge=0, le=100)
    min_gc_interval_when_soft_limited: Duration = 10.0
    min_gc_interval_when_hard_limited: Duration = 0.0

    @model_validator(mode="after")
    def _limits(self) -> MemoryLimiterConfig:
        if self.check_interval <= 0:
            raise ValueError("check_interval must be greater than zero (1s is recommended)")
        if not self.limit_mib and not self.limit_percentage:
            raise ValueError("set limit_mib or limit_percentage to a value greater than zero")
        if self.limit_mib and self.spike_limit_mib >= self.limit_mib:
            raise ValueError(f"spike_limit_mib ({self.spike_limit_mib}) must be smaller than "
                             f"limit_mib ({self.limit_mib})")
        if (not self.limit_mib and self.spike_limit_percentage
                and self.spike_limit_percentage >= self.limit_percentage):
            raise ValueError(f"spike_limit_percentage ({self.spike_limit_percentage}) must be "
                             f"smaller than limit_percentage ({self.limit_percentage})")
        return self

    def limits(self, total_memory: Callable[[], int]) -> tuple[int, int]:
        """(hard, soft) limits in bytes; `limit_mib` wins over the percentage settings."""
        if self.limit_mib:
            hard, spike = self.limit_mib * MIB, self.spike_limit_mib * MIB
        else:
            total = total_memory()
            hard = total * self.limit_percentage // 100
            spike = total * self.spike_limit_percentage // 100
        return hard, hard - (spike or hard // 5)


def _create(settings: CreateSettings, config: MemoryLimiterConfig,
            next_consumer: Consumer) -> MemoryLimiter:
    return MemoryLimiter(settings, config, next_consumer)


FACTORY = Factory(Kind.PROCESSOR, "memory_limiter", MemoryLimiterConfig, _create,
                  description="Refuses data (retryable) above a memory limit; forces GC above "
                              "the hard limit.")


# -- memory readings ------------------------------------------------------------------------


def cgroup_memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup"),
                        ) -> int | None:
    """This process's cgroup memory limit in bytes (v2 `memory.max`, v1 `limit_in_bytes`)."""
    v2_path, v1_path = "", ""
    try:
        for line in proc_cgroup.read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0" and controllers == "":
                v2_path = path
            elif "memory" in controllers.split(","):
                v1_path = path
    except OSError:
        pass
    candidates = [root / v2_path.lstrip("/") / "memory.max", root / "memory.max",
                  root / "memory" / v1_path.lstrip("/") / "memory.limit_in_bytes",
                  root / "memory" / "memory.limit_in_bytes"]
    for candidate in candidates:
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        if text.isdigit() and int(text) < UNLIMITED:
            return int(text)
    return None


def total_memory() -> int:
    """The memory this process may use: the cgroup limit when set, else physical memory."""
    physical = psutil.virtual_memory().total
    limit = cgroup_memory_limit()
    return min(limit, physical) if limit else physical


def _malloc_trim() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    return (lambda: trim(0)) if trim else (lambda: None)


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the processor ---------------------------------------------------------------------------


class MemoryLimiter(Processor):
    """Checks memory on a timer; `consume` refuses with a retryable error while limited."""

    def __init__(self, settings: CreateSettings, config: MemoryLimiterConfig,
                 next_consumer: Consumer, read_memory: Callable[[], int] = rss_bytes,
                 read_total: Callable[[], int] = total_memory,
                 recheck_interval: float = RECHECK_INTERVAL):
        super().__init__(next_consumer)
        self.config = config
        self.id = str(settings.id)
        self.log = settings.logger
        self.metrics = settings.metrics
        self.read_memory = read_memory
        self.hard_limit, self.soft_limit = config.limits(read_total)
        self.refusing = False
        self._refusing_gauge = self.metrics.gauge(
            "otelflow_memory_limiter_refusing", "1 while data is refused.",
            ("processor",)).labels(self.id)
        self.recheck_interval = recheck_interval
        self._next_recheck = float("-inf")
        self._last_gc = float("-inf")
        self._trim = _malloc_trim()
        self._task: asyncio.Task | None = None
        self.log.info("memory limiter configured", limit_mib=self.hard_limit // MIB,
                      soft_limit_mib=self.soft_limit // MIB,
                      check_interval=config.check_interval)

    async def start(self, host: Host) -> None:
        self.check()
        self._task = asyncio.create_task(self._monitor(), name=f"{self.id}-monitor")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            try:
                self.check()
            except Exception as exc:  # keep watching; a dead monitor would freeze the state
                self.log.error("memory check failed", error=repr(exc))

    def check(self) -> None:
        """Measure, collect garbage if needed, and decide whether to refuse data."""
        now = time.monotonic()
        self._next_recheck = now + self.recheck_interval
        used = self.read_memory()
        if used >= self.soft_limit:  # freed heap pages count in RSS until handed back
            self._trim()
            used = self.read_memory()
        if used >= self.hard_limit and now - self._last_gc >= \
                self.config.min_gc_interval_when_hard_limited:
            self.log.warning("memory above hard limit, forcing GC", used_mib=used // MIB)
            used = self._collect()
        refusing = used >= self.soft_limit
        if refusing and not self.refusing and now - self._last_gc >= \
                self.config.min_gc_interval_when_soft_limited:
            used = self._collect()
            refusing = used >= self.soft_limit
        if refusing != self.refusing:
            self.log.warning("memory above soft limit, refusing data" if refusing
                             else "memory back within limits, accepting data",
                             used_mib=used // MIB, soft_limit_mib=self.soft_limit // MIB)
        self.refusing = refusing
        self._refusing_gauge.set(int(refusing))

    def _collect(self) -> int:
        gc.collect()
        self._trim()
        self._last_gc = time.monotonic()
        return self.read_memory()

    async def consume(self, batch: Batch) -> None:
        if not self.refusing and time.monotonic() >= self._next_recheck:
            self.check()
        if self.refusing:
            n = batch.item_count()
            self.metrics.counter(f"otelcol_processor_refused_{batch.signal.item_unit}",
                                 f"Number of {batch.signal.item_unit} refused by the processor.",
                                 ("processor",)).labels(self.id).inc(n)
            raise RetryableError("data refused due to high memory usage",
                                 self.config.check_interval)
        await self.next_consumer.consume(batch)
