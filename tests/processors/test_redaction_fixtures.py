"""The recorded `pii_logs` fixture (real SDK output: emails, bearer tokens, card numbers in
three spellings, phone numbers, client IPs) through a pipeline with the proposed default
redaction block plus the phone and IPv4 patterns: none of it reaches the exporter."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from otelflow import otlp_json
from otelflow.config.loader import default_config_text

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pii_logs"
PII = re.compile(r"[\w.+-]+@example\.(?:com|org|net)|Bearer [\w.~+/-]+|\+1-202-555-\d{4}"
                 r"|198\.51\.100\.\d+|4111 1111 1111 1111|5555-5555-5555-4444|378282246310005")


def pipeline_yaml() -> str:
    redaction = yaml.safe_load(default_config_text())["processors"]["redaction"]  # the shipped default
    redaction["value_patterns"] += ["phone_e164", "ipv4"]
    return yaml.safe_dump({
        "processors": {"redaction": redaction},
        "exporters": {"debug": {}},
        "service": {"pipelines": {sig: {"processors": ["redaction"], "exporters": ["debug"]}
                                  for sig in ("traces", "logs")}},
    })


def test_recorded_pii_never_reaches_the_exporter(otelflow_pipeline):
    recorded = "".join(p.read_text() for p in sorted(FIXTURE.glob("*.jsonl")))
    planted = set(PII.findall(recorded))
    assert len(planted) > 60  # emails, tokens, cards, phones and IPs really are in there
    result = otelflow_pipeline(pipeline_yaml()).run(FIXTURE)
    sink = result["debug"]
    assert sink.item_count("logs") == 45
    assert sink.item_count("traces") == 45
    exported = "\n".join(otlp_json.dumps(batch.message) for batch in sink.batches)
    assert [p for p in planted if p in exported] == []
    assert "redaction.masked.count" in exported
