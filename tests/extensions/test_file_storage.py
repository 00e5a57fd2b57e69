"""file_storage: config errors, durable key/value writes (kill -9 included), compaction."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from otelflow.component import ComponentID, CreateSettings, Kind
from otelflow.extensions.file_storage import FileStorage, FileStorageConfig, sanitize
from otelflow.telemetry.logs import component_logger
from otelflow.telemetry.metrics import SelfMetrics
from otelflow.testing.configs import config_error


def make(directory, **kwargs) -> FileStorage:
    cfg = FileStorageConfig(directory=str(directory), **kwargs)
    return FileStorage(cfg, CreateSettings(ComponentID("file_storage"), Kind.EXTENSION,
                                           component_logger("extension", "file_storage"),
                                           SelfMetrics()))


CASES = yaml.safe_load((Path(__file__).parent / "testdata" / "file_storage.yaml").read_text())


@pytest.mark.parametrize("name", sorted(CASES["invalid"]))
def test_invalid_configs(name):
    case = CASES["invalid"][name]
    message = config_error(extensions={"file_storage": case["config"]})
    for fragment in case["errors"]:
        assert fragment in message, f"{fragment!r} not in {message}"


def test_valid_config_with_every_key():
    cfg = FileStorageConfig.model_validate(CASES["valid"])
    assert cfg.fsync and cfg.compaction.on_rebound and cfg.compaction.check_interval == 5.0


async def test_missing_directory_is_a_clear_start_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="create_directory: true"):
        await make(tmp_path / "nope").start(None)
    storage = make(tmp_path / "a" / "b", create_directory=True, directory_permissions="0700")
    await storage.start(None)
    assert (tmp_path / "a" / "b").is_dir()
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700


def test_file_names_escape_unsafe_characters():
    assert sanitize("logs/container") == "logs~002Fcontainer"
    assert sanitize("a~b") == "a~007Eb"
    assert sanitize("ok.name-1_x") == "ok.name-1_x"


async def test_key_value_round_trip_and_reopen(tmp_path):
    storage = make(tmp_path, fsync=True)
    await storage.start(None)
    client = await storage.client(Kind.EXPORTER, "otlp/back end")
    assert client.path.name == "exporter_otlp_back~0020end"
    await asyncio.gather(*(client.set(f"k{i:03d}", bytes([i])) for i in range(100)))
    await client.batch(sets={"x": b"1"}, deletes=["k000", "k001"])
    assert await client.get("k002") == b"\x02"
    assert await client.get("k000") is None
    await storage.shutdown()
    storage = make(tmp_path)
    client = await storage.client(Kind.EXPORTER, "otlp/back end")
    keys = await client.keys("k")
    assert keys == [f"k{i:03d}" for i in range(2, 100)]
    assert await client.get("x") == b"1"
    await storage.shutdown()
    with pytest.raises(RuntimeError, match="closed"):
        await client.set("y", b"")


def test_committed_writes_survive_kill_9(tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, sys
        from tests.extensions.test_file_storage import make
        from otelflow.component import Kind
        async def main():
            storage = make({str(tmp_path)!r})
            client = await storage.client(Kind.EXPORTER, "otlp")
            i = 0
            while True:
                await asyncio.gather(*(client.set(f"k{{i + j:08d}}", b"x" * 1000)
                                       for j in range(10)))
                i += 10
                print(i, flush=True)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env=os.environ, cwd=os.getcwd(), text=True)
    acknowledged = 0
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 2000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    async def check():
        storage = make(tmp_path)
        client = await storage.client(Kind.EXPORTER, "otlp")
        keys = await client.keys("k")
        await storage.shutdown()
        return keys
    keys = asyncio.run(check())
    assert len(keys) >= acknowledged
    assert keys[:acknowledged] == [f"k{i:08d}" for i in range(acknowledged)]


async def test_compaction_on_start_and_on_rebound_reclaim_space(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "tempdb-stale").write_bytes(b"left by a crash")
    storage = make(tmp_path, compaction={"on_rebound": True, "check_interval": "50ms",
                                         "rebound_needed_threshold_mib": 2,
                                         "rebound_trigger_threshold_mib": 1,
                                         "directory": str(work), "cleanup_on_start": True})
    await storage.start(None)
    assert not (work / "tempdb-stale").exists()
    client = await storage.client(Kind.EXPORTER, "otlp")
    await client.batch(sets={f"k{i}": os.urandom(4096) for i in range(1000)})  # ~4 MiB
    await asyncio.sleep(0.2)
    allocated, _ = await client.sizes()
    assert allocated > 4 * 1024 * 1024
    await client.batch(deletes=[f"k{i}" for i in range(990)])
    for _ in range(50):
        await asyncio.sleep(0.05)
        allocated, _ = await client.sizes()
        if allocated < 1024 * 1024:
            break
    assert allocated < 1024 * 1024, allocated
    assert len(await client.keys("k")) == 10
    assert list(work.iterdir()) == []
    await storage.shutdown()

    storage = make(tmp_path, compaction={"on_start": True})
    client = await storage.client(Kind.EXPORTER, "otlp")
    assert len(await client.keys("k")) == 10
    await storage.shutdown()


async def test_storage_failures_surface_as_os_errors(tmp_path):
    storage = make(tmp_path)
    client = await storage.client(Kind.EXPORTER, "otlp")
    await client.set("k", b"v")
    await client._run(client._conn.execute, "PRAGMA query_only = ON")
    with pytest.raises(OSError, match="exporter_otlp_: attempt to write a readonly database"):
        await client.set("k2", b"v")
    assert await client.get("k") == b"v"
    await storage.shutdown()
