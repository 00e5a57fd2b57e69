"""Backend outage: the real SDK sends through a collector while both backends are down.

One collector fans out to two exporters, one with the in-memory queue and one with the
persistent queue (file_storage). Both backends stop for OUTAGE seconds (20 s in the issue;
OTELFLOW_OUTAGE_SECONDS overrides the CI default) while spans keep flowing. Once they are
back, every span sent arrives: exactly once through the memory queue, at least once (and here
exactly once) through the persistent one. Nothing is counted as dropped.
"""

from __future__ import annotations

import os
import time

from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import CollectorProcess, free_port
from tests.pipeline.delivery_helpers import (
    FAST_RETRY,
    collector_config,
    metric_sum,
    otlp_exporter,
    scrape,
    sdk_tracer,
)

OUTAGE = float(os.environ.get("OTELFLOW_OUTAGE_SECONDS", "6"))


def test_everything_sent_during_an_outage_arrives(tmp_path):
    port, metrics_port = free_port(), free_port()
    with FakeBackend() as memory_backend, FakeBackend() as disk_backend:
        config = collector_config(port, metrics_port, exporters={
            "otlp/memory": otlp_exporter(memory_backend.port, retry_on_failure=FAST_RETRY),
            "otlp/disk": otlp_exporter(disk_backend.port, retry_on_failure=FAST_RETRY,
                                       sending_queue={"storage": "file_storage"}),
        }, extensions={"file_storage": {"directory": str(tmp_path)}})
        with CollectorProcess(config, wait_port=port) as collector:
            provider, sdk = sdk_tracer(port)
            tracer = provider.get_tracer("outage")
            memory_backend.stop()
            disk_backend.stop()
            outage_end = time.monotonic() + OUTAGE
            while time.monotonic() < outage_end:  # ~1,000 spans/s during the outage
                for _ in range(50):
                    tracer.start_span("during-outage").end()
                time.sleep(0.05)
            provider.force_flush()
            assert memory_backend.items() == disk_backend.items() == 0
            memory_backend.start()
            disk_backend.start()
            provider.shutdown()
            sent = set(sdk.acknowledged)
            assert len(sent) >= OUTAGE * 500 and not sdk.failed
            memory_backend.wait_for_items(len(sent), timeout=20)
            disk_backend.wait_for_items(len(sent), timeout=20)
            samples = scrape(metrics_port)
            assert collector.stop() == 0, collector.logs()

    via_memory, via_disk = memory_backend.span_counts(), disk_backend.span_counts()
    assert set(via_memory) == sent, f"memory queue lost {len(sent - set(via_memory))} spans"
    assert max(via_memory.values()) == 1, "memory queue delivered a span twice"
    assert set(via_disk) == sent, f"persistent queue lost {len(sent - set(via_disk))} spans"
    duplicates = sum(n - 1 for n in via_disk.values())
    print(f"outage {OUTAGE}s: {len(sent)} spans; persistent-queue duplicates: {duplicates}")
    assert metric_sum(samples, "otelflow_dropped_items_total") == 0
    for exporter in ("otlp/memory", "otlp/disk"):
        assert metric_sum(samples, "otelcol_exporter_sent_spans_total",
                          exporter=exporter) == len(sent)
