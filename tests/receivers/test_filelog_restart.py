"""filelog with checkpoints in file_storage: a file written, rotated and appended while the
collector restarts yields every line exactly once, parsed."""

from __future__ import annotations

import json
import os
import time

from otelflow.fileformat import read_records
from otelflow.testing.process import CollectorProcess, free_port


def config(logs, out, storage, port) -> str:
    return f"""
extensions:
  file_storage: {{directory: "{storage}", create_directory: true}}
receivers:
  filelog:
    include: ["{logs}/app.log*"]
    start_at: beginning
    poll_interval: 50ms
    storage: file_storage
    operators: [{{type: json_parser}}]
exporters:
  file: {{path: "{out}", append: true, flush_interval: 0s}}
service:
  extensions: [file_storage]
  telemetry: {{metrics: {{address: "127.0.0.1:{port}"}}}}
  pipelines: {{logs: {{receivers: [filelog], exporters: [file]}}}}
"""


def write(path, numbers) -> None:
    with path.open("a") as f:
        for n in numbers:
            f.write(json.dumps({"n": n, "msg": f"line {n}"}) + "\n")


def delivered(out) -> list[int]:
    if not out.exists():
        return []
    return [next(a.value.int_value for a in r.attributes if a.key == "n")
            for _sig, m in read_records(out) for rl in m.resource_logs
            for sl in rl.scope_logs for r in sl.log_records]


def wait_for(out, count: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(got := delivered(out)) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} lines delivered"
        time.sleep(0.05)
    return got


def test_rotation_and_restart_deliver_every_line_once(tmp_path):
    logs, out, storage = tmp_path / "logs", tmp_path / "out.jsonl", tmp_path / "storage"
    logs.mkdir()
    app = logs / "app.log"
    write(app, range(100))
    port = free_port()
    text = config(logs, out, storage, port)
    with CollectorProcess(text, wait_port=port) as first:
        wait_for(out, 100)
        assert first.stop() == 0, first.logs()
    # while the collector is down: the file grows, is rotated, and a new one starts
    write(app, range(100, 150))
    os.rename(app, logs / "app.log.1")
    write(app, range(150, 200))
    with CollectorProcess(text, wait_port=port) as second:
        wait_for(out, 200)
        write(app, range(200, 250))
        write(logs / "app.log.1", [])  # untouched rotated file: nothing new
        got = wait_for(out, 250)
        time.sleep(0.3)  # a few more polls: nothing may arrive twice
        assert second.stop() == 0, second.logs()
    got = delivered(out)
    assert sorted(got) == list(range(250)), "every line exactly once"
    records = [r for _s, m in read_records(out) for rl in m.resource_logs
               for sl in rl.scope_logs for r in sl.log_records]
    first_record = {a.key: a.value for a in records[0].attributes}
    assert first_record["msg"].string_value == "line 0"  # parsed by json_parser
    assert first_record["log.file.name"].string_value == "app.log"
