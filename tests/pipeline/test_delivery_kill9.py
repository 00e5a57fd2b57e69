"""kill -9 of the collector mid-stream with the persistent queue: no acknowledged span is lost.

The real SDK streams 50,000 spans (its OTLP exporter retries while the collector is down).
The collector acknowledges a request only once it is committed to its file_storage queue and
deletes it only once the (deliberately slow) backend accepted it, so at the kill there is a
backlog on disk (asserted). After a restart on the same storage directory, every span the SDK saw
acknowledged reaches the backend; duplicates are allowed and reported.
"""

from __future__ import annotations

import random
import time

from otelflow.testing.fake_backend import FakeBackend
from otelflow.testing.process import CollectorProcess, free_port
from tests.pipeline.delivery_helpers import (
    FAST_RETRY,
    collector_config,
    otlp_exporter,
    sdk_tracer,
)

SPANS = 50_000
CHUNK = 1_000


def test_acknowledged_spans_survive_kill_9(tmp_path):
    port, metrics_port = free_port(), free_port()
    kill_after = random.randrange(5, SPANS // CHUNK - 10) * CHUNK
    with FakeBackend(delay=0.3) as backend:
        config = collector_config(port, metrics_port, exporters={
            "otlp": otlp_exporter(backend.port, retry_on_failure=FAST_RETRY, sending_queue={
                "storage": "file_storage", "num_consumers": 1, "queue_size": 5000}),
        }, extensions={"file_storage": {"directory": str(tmp_path)}})
        collector = CollectorProcess(config, wait_port=port).start()
        restarted = None
        try:
            provider, sdk = sdk_tracer(port, max_export_batch_size=CHUNK)
            tracer = provider.get_tracer("kill9")
            for sent in range(0, SPANS, CHUNK):
                if sent == kill_after:
                    acked_before_kill = len(sdk.acknowledged)
                    collector.kill()
                    delivered_before_kill = backend.items()
                    backend.delay = 0.0  # the backlog now drains fast after the restart
                    time.sleep(0.3)
                    restarted = CollectorProcess(config, wait_port=port).start()
                for _ in range(CHUNK):
                    tracer.start_span("stream").end()
                time.sleep(0.05)
            provider.shutdown()
            acknowledged = set(sdk.acknowledged)
            backend.wait_for_items(len(acknowledged), timeout=30)
            assert restarted is not None and restarted.stop() == 0, restarted.logs()
        finally:
            collector.stop()
            if restarted is not None:
                restarted.stop()

    received = backend.span_counts()
    lost = acknowledged - set(received)
    duplicates = sum(n - 1 for n in received.values())
    print(f"killed after {kill_after} spans ({acked_before_kill} acknowledged, "
          f"{delivered_before_kill} delivered); "
          f"acknowledged {len(acknowledged)}, not acknowledged {len(sdk.failed)}, "
          f"received {len(received)}, duplicates {duplicates}")
    assert acked_before_kill - delivered_before_kill >= 2 * CHUNK, "no backlog on disk at kill"
    assert not lost, f"{len(lost)} acknowledged spans never reached the backend"
    assert len(acknowledged) + len(sdk.failed) == SPANS
