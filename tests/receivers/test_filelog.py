"""filelog receiver: tailing, parsers, container formats, multiline and rotation."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.pdata import Batch
from otelflow.receivers.filelog import FileLogConfig, FileLogReceiver
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics


class Sink:
    mutates_data = False

    def __init__(self):
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)

    def records(self) -> list:
        return [(rl, r) for b in self.batches for rl in b.message.resource_logs
                for sl in rl.scope_logs for r in sl.log_records]

    def bodies(self) -> list[str]:
        return [r.body.string_value for _rl, r in self.records()]


def receiver(sink: Sink, **config) -> FileLogReceiver:
    config.setdefault("start_at", "beginning")
    config.setdefault("force_flush_period", "0s")
    settings = CreateSettings(ComponentID("filelog"), Kind.RECEIVER,
                              component_logger("receiver", "filelog"), SelfMetrics())
    return FileLogReceiver(settings, FileLogConfig.model_validate(config), sink)


def attrs(record) -> dict:
    return {a.key: a.value.string_value or a.value.int_value for a in record.attributes}


async def test_tails_appended_lines_once(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\n")
    sink = Sink()
    rcv = receiver(sink, include=[str(tmp_path / "*.log")])
    await rcv.poll()
    with log.open("a") as f:
        f.write("three\nfour-without-newline")
    rcv.config.force_flush_period = 60.0
    await rcv.poll()
    assert sink.bodies() == ["one", "two", "three"]  # the partial line waits
    rcv.config.force_flush_period = 0.0
    await rcv.poll()
    await rcv.poll()
    assert sink.bodies() == ["one", "two", "three", "four-without-newline"]
    assert attrs(sink.records()[0][1])["log.file.name"] == "app.log"
    await rcv.shutdown()


async def test_start_at_end_skips_existing_but_reads_new_files(tmp_path):
    (tmp_path / "old.log").write_text("old line\n")
    sink = Sink()
    rcv = receiver(sink, include=[str(tmp_path / "*.log")], start_at="end")
    await rcv.poll()
    (tmp_path / "new.log").write_text("new line\n")
    with (tmp_path / "old.log").open("a") as f:
        f.write("appended\n")
    await rcv.poll()
    assert sorted(sink.bodies()) == ["appended", "new line"]
    await rcv.shutdown()


async def test_json_parser_with_timestamp_and_severity(tmp_path):
    log = tmp_path / "svc.log"
    log.write_text(json.dumps({"ts": "2024-05-01T12:00:00.250Z", "level": "WARN",
                               "msg": "slow step", "step": 7, "ctx": {"gpu": 1}}) + "\nnot json\n")
    sink = Sink()
    rcv = receiver(sink, include=[str(log)], operators=[{
        "type": "json_parser",
        "timestamp": {"parse_from": "attributes.ts", "layout": "%Y-%m-%dT%H:%M:%S.%LZ"},
        "severity": {"parse_from": "attributes.level"}}])
    await rcv.poll()
    (_rl, first), (_rl2, second) = sink.records()
    assert first.time_unix_nano == 1714564800_250_000_000
    assert (first.severity_number, first.severity_text) == (13, "WARN")
    a = {x.key: x.value for x in first.attributes}
    assert a["msg"].string_value == "slow step" and a["step"].int_value == 7
    assert a["ctx"].kvlist_value.values[0].key == "gpu"
    assert "json_parser" in attrs(second)["log.parse_error"]  # on_error: send keeps it
    await rcv.shutdown()


async def test_regex_parser_and_severity_mapping(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("1714564800 E payment failed\n")
    sink = Sink()
    rcv = receiver(sink, include=[str(log)], operators=[{
        "type": "regex_parser", "regex": r"^(?P<t>\d+) (?P<sev>\w) (?P<message>.*)$",
        "timestamp": {"parse_from": "attributes.t", "layout_type": "epoch", "layout": "s"},
        "severity": {"parse_from": "attributes.sev", "mapping": {"error": ["E"], "info": "I"}}}])
    await rcv.poll()
    record = sink.records()[0][1]
    assert record.time_unix_nano == 1714564800 * 10**9
    assert record.severity_number == 17
    assert attrs(record)["message"] == "payment failed"
    await rcv.shutdown()


async def test_container_formats_and_pod_metadata(tmp_path):
    pod_dir = tmp_path / "pods" / "ml_trainer-0_0d3c7a2e-1111-2222-3333-444455556666" / "main"
    pod_dir.mkdir(parents=True)
    (pod_dir / "0.log").write_text(
        "2024-05-01T12:00:00.123456789Z stdout F epoch 3 done\n"
        "2024-05-01T12:00:01.000000000+02:00 stderr F oom warning\n"
        + json.dumps({"log": "docker line\n", "stream": "stdout",
                      "time": "2024-05-01T12:00:02.5Z"}) + "\n")
    sink = Sink()
    rcv = receiver(sink, include=[str(tmp_path / "pods/*/*/*.log")],
                   operators=[{"type": "container"}])
    await rcv.poll()
    records = sink.records()
    assert [r.body.string_value for _rl, r in records] == ["epoch 3 done", "oom warning",
                                                           "docker line"]
    assert records[0][1].time_unix_nano == 1714564800_123456789
    assert records[1][1].time_unix_nano == 1714564801 * 10**9 - 2 * 3600 * 10**9
    assert [attrs(r)["log.iostream"] for _rl, r in records] == ["stdout", "stderr", "stdout"]
    resource = {a.key: a.value.string_value for a in records[0][0].resource.attributes}
    assert resource == {"k8s.namespace.name": "ml", "k8s.pod.name": "trainer-0",
                        "k8s.pod.uid": "0d3c7a2e-1111-2222-3333-444455556666",
                        "k8s.container.name": "main", "k8s.container.restart_count": "0"}
    await rcv.shutdown()


async def test_partial_cri_lines_are_reassembled_across_polls(tmp_path):
    log = tmp_path / "0.log"
    stamp = "2024-05-01T12:00:00.000000001Z"
    log.write_text(f"{stamp} stdout P first half, \n{stamp} stdout P second part, \n")
    sink = Sink()
    rcv = receiver(sink, include=[str(log)], operators=[{"type": "container"}])
    rcv.config.force_flush_period = 60.0
    await rcv.poll()
    assert sink.bodies() == []  # the entry is not complete yet
    with log.open("a") as f:
        f.write(f"{stamp} stdout F end\n2024-05-01T12:00:01Z stderr F next\n"
                f"{stamp} stdout P cut off")
    await rcv.poll()
    assert sink.bodies() == ["first half, second part, end", "next"]
    assert sink.records()[0][1].time_unix_nano == 1714564800_000000001
    assert "logtag" not in attrs(sink.records()[0][1])
    rcv.config.force_flush_period = 0.0  # a partial line with no end is flushed as it is
    await rcv.poll()
    assert sink.bodies()[-1] == "cut off" and attrs(sink.records()[-1][1])["logtag"] == "P"
    await rcv.shutdown()


async def test_multiline_start_pattern(tmp_path):
    log = tmp_path / "java.log"
    log.write_text("2024 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)\n2024 INFO ok\n")
    sink = Sink()
    rcv = receiver(sink, include=[str(log)], multiline={"line_start_pattern": r"^\d{4} "},
                   force_flush_period="10s")
    await rcv.poll()
    assert sink.bodies() == ["2024 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)"]
    rcv.config.force_flush_period = 0.0
    await rcv.poll()
    assert sink.bodies()[-1] == "2024 INFO ok"
    await rcv.shutdown()


async def test_rotation_by_rename_reads_the_rest_of_the_old_file_and_the_new_one(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"first {i}\n" for i in range(3)))
    sink = Sink()
    rcv = receiver(sink, include=[str(log)])
    await rcv.poll()
    with log.open("a") as f:  # written just before rotation, not yet read
        f.write("last of old\n")
    os.rename(log, tmp_path / "app.log.1")
    log.write_text("new file line\n")
    await rcv.poll()
    await rcv.poll()
    assert sink.bodies() == ["first 0", "first 1", "first 2", "last of old", "new file line"]
    await rcv.shutdown()


@pytest.mark.parametrize(("config", "message"), [
    ({"include": []}, "include"),
    ({"include": ["x"], "multiline": {}}, "exactly one of"),
    ({"include": ["x"], "operators": [{"type": "xml_parser"}]}, "xml_parser"),
    ({"include": ["x"], "operators": [{"type": "regex_parser", "regex": "(\\d+)"}]},
     "named groups"),
])
def test_bad_config(config, message):
    with pytest.raises(ValidationError, match=message):
        FileLogConfig.model_validate(config)
