"""Writes otelflow.json, the Grafana dashboard over otelflow's self-metrics.

Edit the PANELS table and run `python deploy/grafana/generate.py`; the test suite checks that
every query parses in a real Prometheus and names only metrics the collector exports.
"""

from __future__ import annotations

import json
from pathlib import Path

SEL = 'job=~"$job", instance=~"$instance"'
RATE = "[$__rate_interval]"

# (title, unit, [(legend, expr)])
PANELS = [
    ("Accepted items/s by receiver", "short", [
        ("{{receiver}} spans", f"sum by (receiver) (rate(otelcol_receiver_accepted_spans_total{{{SEL}}}{RATE}))"),
        ("{{receiver}} metric points", f"sum by (receiver) (rate(otelcol_receiver_accepted_metric_points_total{{{SEL}}}{RATE}))"),
        ("{{receiver}} log records", f"sum by (receiver) (rate(otelcol_receiver_accepted_log_records_total{{{SEL}}}{RATE}))"),
    ]),
    ("Refused items/s by receiver", "short", [
        ("{{receiver}} spans", f"sum by (receiver) (rate(otelcol_receiver_refused_spans_total{{{SEL}}}{RATE}))"),
        ("{{receiver}} metric points", f"sum by (receiver) (rate(otelcol_receiver_refused_metric_points_total{{{SEL}}}{RATE}))"),
        ("{{receiver}} log records", f"sum by (receiver) (rate(otelcol_receiver_refused_log_records_total{{{SEL}}}{RATE}))"),
    ]),
    ("Processor items in/out", "short", [
        ("{{processor}} in", f"sum by (processor) (rate(otelcol_processor_incoming_items_total{{{SEL}}}{RATE}))"),
        ("{{processor}} out", f"sum by (processor) (rate(otelcol_processor_outgoing_items_total{{{SEL}}}{RATE}))"),
    ]),
    ("Sent items/s by exporter", "short", [
        ("{{exporter}} spans", f"sum by (exporter) (rate(otelcol_exporter_sent_spans_total{{{SEL}}}{RATE}))"),
        ("{{exporter}} metric points", f"sum by (exporter) (rate(otelcol_exporter_sent_metric_points_total{{{SEL}}}{RATE}))"),
        ("{{exporter}} log records", f"sum by (exporter) (rate(otelcol_exporter_sent_log_records_total{{{SEL}}}{RATE}))"),
    ]),
    ("Failed sends/s by exporter", "short", [
        ("{{exporter}} spans", f"sum by (exporter) (rate(otelcol_exporter_send_failed_spans_total{{{SEL}}}{RATE}))"),
        ("{{exporter}} metric points", f"sum by (exporter) (rate(otelcol_exporter_send_failed_metric_points_total{{{SEL}}}{RATE}))"),
        ("{{exporter}} log records", f"sum by (exporter) (rate(otelcol_exporter_send_failed_log_records_total{{{SEL}}}{RATE}))"),
    ]),
    ("Dropped items/s by reason", "short", [
        ("{{component}} {{reason}}", f"sum by (component, reason) (rate(otelflow_dropped_items_total{{{SEL}}}{RATE}))"),
    ]),
    ("Sending queue fill", "percentunit", [
        ("{{exporter}}", f"max by (exporter) (otelcol_exporter_queue_size{{{SEL}}} / otelcol_exporter_queue_capacity{{{SEL}}})"),
    ]),
    ("Resident memory", "bytes", [
        ("{{instance}}", f"otelcol_process_memory_rss{{{SEL}}}"),
    ]),
    ("Memory limiter refusing", "short", [
        ("{{processor}}", f"max by (processor) (otelflow_memory_limiter_refusing{{{SEL}}})"),
    ]),
    ("Drift score by feature", "short", [
        ("{{feature}} {{group}} {{detector}}", f"max by (feature, group, detector) (otelflow_drift_score{{{SEL}}})"),
    ]),
    ("Drift alerts firing", "short", [
        ("{{severity}}", f"sum by (severity) (otelflow_drift_alerts_firing{{{SEL}}})"),
    ]),
    ("Tail sampling decisions/s", "short", [
        ("{{policy}} sampled={{sampled}}", f"sum by (policy, sampled) (rate(otelcol_processor_tail_sampling_count_traces_sampled_total{{{SEL}}}{RATE}))"),
    ]),
    ("Tail sampling traces in memory", "short", [
        ("{{processor}}", f"sum by (processor) (otelcol_processor_tail_sampling_sampling_traces_on_memory{{{SEL}}})"),
    ]),
]


def dashboard() -> dict:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + j), "expr": expr, "legendFormat": legend}
                        for j, (legend, expr) in enumerate(targets)],
        })
    variable = {"type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*"}
    return {
        "title": "otelflow", "uid": "otelflow", "schemaVersion": 39, "version": 1,
        "tags": ["otelflow", "opentelemetry"], "timezone": "browser", "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "query": "prometheus"},
            {**variable, "name": "job", "query": "label_values(otelcol_process_memory_rss, job)"},
            {**variable, "name": "instance",
             "query": 'label_values(otelcol_process_memory_rss{job=~"$job"}, instance)'},
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("otelflow.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")
