"""librdkafka's in-process Kafka mock cluster, loaded with ctypes, as a test broker.

Apache Kafka needs a JVM; librdkafka ships a Kafka-protocol mock cluster (multi-broker,
produce/fetch, consumer groups, offset commits, fault injection) that any Kafka client, aiokafka
included, can talk to over loopback TCP. The library comes from the `confluent-kafka` wheel
(`confluent_kafka.libs/`) or the Debian package `librdkafka1`.

    with MockKafkaCluster(brokers=3) as cluster:
        cluster.create_topic("otlp_spans", partitions=6)
        ... aiokafka clients use cluster.bootstrap_servers ...
        cluster.broker_down(1); ...; cluster.broker_up(1)

`kafka_cluster` is a pytest fixture yielding a started 3-broker cluster
(`pytest_plugins = ["otelflow.testing.kafka_mock"]` in a test module enables it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import glob
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum

_RD_KAFKA_PRODUCER = 0


class ApiKey(IntEnum):
    """Kafka protocol request types, for `push_request_errors`."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    SYNC_GROUP = 14
    INIT_PRODUCER_ID = 22


class KafkaErrorCode(IntEnum):
    """A few broker error codes worth injecting (Kafka protocol numbers)."""

    NOT_LEADER_FOR_PARTITION = 6
    REQUEST_TIMED_OUT = 7
    NETWORK_EXCEPTION = 13
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    MESSAGE_TOO_LARGE = 10


def _library_candidates() -> list[str]:
    paths: list[str] = []
    try:
        import confluent_kafka

        libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)),
                            "confluent_kafka.libs")
        paths += sorted(glob.glob(os.path.join(libs, "librdkafka*.so*")))
    except ImportError:
        pass
    found = ctypes.util.find_library("rdkafka")
    paths += [found] if found else []
    paths += ["librdkafka.so.1"]
    return paths


def load_librdkafka() -> ctypes.CDLL:
    """The first librdkafka that exports the mock cluster API, with argtypes declared."""
    errors = []
    for path in _library_candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
            continue
        if hasattr(lib, "rd_kafka_mock_cluster_new"):
            _declare(lib)
            return lib
        errors.append(f"{path}: no mock cluster API")
    raise RuntimeError("librdkafka with the mock cluster API not found (install the Debian "
                       "package librdkafka1 or the confluent-kafka wheel): " + "; ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    vp, i32, cp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p
    sigs = {
        "rd_kafka_conf_new": (vp, []),
        "rd_kafka_conf_set": (ctypes.c_int, [vp, cp, cp, cp, ctypes.c_size_t]),
        "rd_kafka_new": (vp, [ctypes.c_int, vp, cp, ctypes.c_size_t]),
        "rd_kafka_destroy": (None, [vp]),
        "rd_kafka_version_str": (cp, []),
        "rd_kafka_mock_cluster_new": (vp, [vp, ctypes.c_int]),
        "rd_kafka_mock_cluster_destroy": (None, [vp]),
        "rd_kafka_mock_cluster_bootstraps": (cp, [vp]),
        "rd_kafka_mock_topic_create": (ctypes.c_int, [vp, cp, ctypes.c_int, ctypes.c_int]),
        "rd_kafka_mock_broker_set_down": (ctypes.c_int, [vp, i32]),
        "rd_kafka_mock_broker_set_up": (ctypes.c_int, [vp, i32]),
        "rd_kafka_mock_broker_set_rtt": (ctypes.c_int, [vp, i32, ctypes.c_int]),
        "rd_kafka_mock_partition_set_leader": (ctypes.c_int, [vp, cp, i32, i32]),
        "rd_kafka_mock_coordinator_set": (ctypes.c_int, [vp, cp, cp, i32]),
        "rd_kafka_mock_clear_request_errors": (None, [vp, ctypes.c_int16]),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [vp, i32]),
        "rd_kafka_mock_push_request_errors_array": (
            None, [vp, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = restype
            fn.argtypes = argtypes


class MockKafkaCluster:
    """A librdkafka mock cluster: `brokers` brokers (ids 1..n) listening on loopback.

    `rebalance_delay_ms` is the group coordinator's initial rebalance delay (Kafka's
    `group.initial.rebalance.delay.ms`, 3 s by default), shortened so tests join fast.
    """

    def __init__(self, brokers: int = 3, rebalance_delay_ms: int = 100):
        self.broker_count = brokers
        self.rebalance_delay_ms = rebalance_delay_ms
        self._lib = load_librdkafka()
        self._rk: int | None = None
        self._mc: int | None = None
        self.bootstrap_servers = ""

    @property
    def version(self) -> str:
        return self._lib.rd_kafka_version_str().decode()

    def start(self) -> MockKafkaCluster:
        lib = self._lib
        conf = lib.rd_kafka_conf_new()
        errstr = ctypes.create_string_buffer(512)
        # a handle that never connects anywhere: it only owns the mock cluster's threads
        lib.rd_kafka_conf_set(conf, b"log_level", b"0", errstr, len(errstr))
        self._rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, len(errstr))
        if not self._rk:
            raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
        self._mc = lib.rd_kafka_mock_cluster_new(self._rk, self.broker_count)
        if not self._mc:
            self.stop()
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap_servers = lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()
        if hasattr(lib, "rd_kafka_mock_group_initial_rebalance_delay_ms"):
            lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._mc, self.rebalance_delay_ms)
        return self

    def stop(self) -> None:
        """Destroy the cluster (closing every connection); idempotent."""
        if self._mc:
            self._lib.rd_kafka_mock_cluster_destroy(self._mc)
            self._mc = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None

    def __enter__(self) -> MockKafkaCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def brokers(self) -> list[str]:
        return self.bootstrap_servers.split(",")

    def _check(self, err: int, what: str) -> None:
        if err:
            raise RuntimeError(f"{what} failed with Kafka error code {err}")

    def create_topic(self, topic: str, partitions: int = 6, replication: int | None = None) -> None:
        replication = min(replication or self.broker_count, self.broker_count)
        err = self._lib.rd_kafka_mock_topic_create(self._mc, topic.encode(), partitions,
                                                   replication)
        self._check(err, f"creating topic {topic!r}")

    def broker_down(self, broker_id: int) -> None:
        """Disconnect the broker and refuse connections (its partitions lose their leader)."""
        self._check(self._lib.rd_kafka_mock_broker_set_down(self._mc, broker_id), "broker down")

    def broker_up(self, broker_id: int) -> None:
        self._check(self._lib.rd_kafka_mock_broker_set_up(self._mc, broker_id), "broker up")

    def set_rtt(self, broker_id: int, rtt_ms: int) -> None:
        """Delay every response of a broker by `rtt_ms`."""
        self._check(self._lib.rd_kafka_mock_broker_set_rtt(self._mc, broker_id, rtt_ms), "set rtt")

    def set_partition_leader(self, topic: str, partition: int, broker_id: int) -> None:
        err = self._lib.rd_kafka_mock_partition_set_leader(self._mc, topic.encode(), partition,
                                                            broker_id)
        self._check(err, "set partition leader")

    def set_group_coordinator(self, group_id: str, broker_id: int) -> None:
        err = self._lib.rd_kafka_mock_coordinator_set(self._mc, b"group", group_id.encode(),
                                                      broker_id)
        self._check(err, "set coordinator")

    def push_request_errors(self, api: ApiKey | int, errors: Sequence[int]) -> None:
        """The next `len(errors)` requests of type `api` (any broker) fail with these codes."""
        array = (ctypes.c_int * len(errors))(*[int(e) for e in errors])
        self._lib.rd_kafka_mock_push_request_errors_array(self._mc, int(api), len(errors), array)

    def clear_request_errors(self, api: ApiKey | int) -> None:
        self._lib.rd_kafka_mock_clear_request_errors(self._mc, int(api))


def _delay_leader_sync(delay: float) -> Callable[[], None]:
    """Patch aiokafka so a group leader sends its SyncGroup `delay` s late; returns the undo.

    The mock's group coordinator (unlike a real broker) answers INVALID_REQUEST to a follower
    whose SyncGroup arrives after the leader's, and aiokafka followers tend to lose that race
    (always when members share an event loop), so groups of several members never settle.
    Only the order of the requests changes; a real broker accepts either.
    """
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    original = GroupCoordinator._perform_assignment

    async def perform_assignment(self, response):
        if len(response.members) > 1:
            await asyncio.sleep(delay)
        return await original(self, response)

    GroupCoordinator._perform_assignment = perform_assignment

    def undo() -> None:
        GroupCoordinator._perform_assignment = original

    return undo


@contextlib.contextmanager
def followers_sync_first(delay: float = 0.3) -> Iterator[None]:
    """`_delay_leader_sync` for in-process consumers, undone on exit."""
    undo = _delay_leader_sync(delay)
    try:
        yield
    finally:
        undo()


_SITECUSTOMIZE = """\
# written by otelflow.testing.kafka_mock.subprocess_env: mock-cluster-friendly consumer groups
try:
    from otelflow.testing.kafka_mock import _delay_leader_sync
    _delay_leader_sync(0.3)
except ImportError:
    pass
"""


def subprocess_env(directory: str | os.PathLike) -> dict[str, str]:
    """Environment for collector subprocesses that join consumer groups on the mock cluster:
    PYTHONPATH gains `directory` holding a `sitecustomize.py` that applies the
    followers-sync-first patch at start-up (production code stays unpatched)."""
    path = os.path.join(directory, "sitecustomize.py")
    with open(path, "w") as f:
        f.write(_SITECUSTOMIZE)
    pythonpath = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": pythonpath}


if "pytest" in sys.modules:  # loaded as a pytest plugin (not in collector subprocesses)
    import pytest

    @pytest.fixture
    def kafka_cluster() -> Iterator[MockKafkaCluster]:
        """A started 3-broker mock cluster; create topics with `create_topic(name, 6)`.

        In-process aiokafka consumer groups are made mock-friendly (`followers_sync_first`).
        """
        with MockKafkaCluster(brokers=3) as cluster, followers_sync_first():
            yield cluster
