"""The embedded broker under load and faults: real producers, a real worker, real broadcasts.

Sizes are bounded for the suite; `make stress` runs the long variant through the same test
(TIMBER_STRESS_PRODUCERS, TIMBER_STRESS_JOBS).
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .platforms import Platform, wait_for

PERSIST = "timber.persistence.persist"
PRODUCERS = int(os.environ.get("TIMBER_STRESS_PRODUCERS", "3"))
JOBS_PER_PRODUCER = int(os.environ.get("TIMBER_STRESS_JOBS", "200"))
# The outbox relay would republish a lost job only after this: redelivery must come well before.
SLOW_REPUBLISH = {"TIMBER_OUTBOX_REPUBLISH_AFTER": "600"}

PRODUCER = textwrap.dedent("""
    import sys
    from timber_tasks.celery_app import app
    persist = app.tasks["timber.persistence.persist"]
    prefix, jobs = sys.argv[1], int(sys.argv[2])
    for n in range(jobs):
        persist.delay("TrackedEvent", "create", {"app_name": "grove", "event_type": f"{prefix}-{n}"})
    print("sent", jobs, flush=True)
""")

PING_LOOP = textwrap.dedent("""
    import subprocess, sys
    while True:  # `celery inspect ping`, one process after another: a new reply queue bound each time
        subprocess.run([sys.executable, "-m", "celery", "-A", "timber_tasks", "inspect", "ping", "-t", "1"])
""")


def broker_files(platform: Platform, folder: str) -> list[Path]:
    root = Path(platform.env["TIMBER_DATA_DIR"]) / "broker" / folder
    return [path for path in root.rglob("*") if path.is_file() and not path.name.endswith(".lock")]


def received_counts(log: str) -> collections.Counter[str]:
    """How many times the worker received each persist job (a redelivery would count twice)."""
    return collections.Counter(re.findall(rf"Task {re.escape(PERSIST)}\[([0-9a-f-]+)\] received", log))


def distinct_events(platform: Platform) -> tuple[int, int]:
    from sqlalchemy import func, select

    Event = platform.timber.get_model("TrackedEvent")
    with platform.timber.db.session_scope() as session:
        rows = session.scalar(select(func.count()).select_from(Event)) or 0
        distinct = session.scalar(select(func.count(func.distinct(Event.event_type)))) or 0
    return int(rows), int(distinct)


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_producers_a_two_process_worker_and_broadcasts_in_a_loop_deliver_every_job_once(
    platform: Platform,
) -> None:
    worker = platform.start_worker(extra_env=SLOW_REPUBLISH)
    pinger = platform.spawn([sys.executable, "-c", PING_LOOP], "ping-loop")
    producers = [platform.spawn([sys.executable, "-c", PRODUCER, f"p{n}", str(JOBS_PER_PRODUCER)], f"producer{n}")
                 for n in range(PRODUCERS)]
    total = PRODUCERS * JOBS_PER_PRODUCER
    wait_for(lambda: all(p.poll() is not None for p in producers) or worker.poll() is not None, 600,
             "the producers to finish")
    for producer in producers:
        assert producer.wait() == 0, platform.log_of(producer)
    wait_for(lambda: distinct_events(platform)[1] == total or worker.poll() is not None, 600,
             f"all {total} jobs done")
    assert worker.poll() is None, platform.log_of(worker)[-3000:]
    assert "pong" in platform.log_of(pinger), "no broadcast was answered: nothing was tested"
    platform.stop(pinger, signal.SIGKILL)

    assert distinct_events(platform) == (total, total)
    counts = received_counts(platform.log_of(worker))
    assert len(counts) == total and set(counts.values()) == {1}, counts.most_common(3)
    assert broker_files(platform, "corrupt") == []
    wait_for(lambda: broker_files(platform, "processing") == [], 30, "every claim acked")
    assert "Unrecoverable error" not in platform.log_of(worker)


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
@pytest.mark.parametrize("kill", ["main process", "process group"])
def test_a_sigkilled_worker_s_claimed_jobs_are_done_once_by_the_next_worker_without_the_outbox(
    platform: Platform, kill: str,
) -> None:
    persist = platform.task(PERSIST)
    jobs = 60
    for n in range(jobs):
        persist.delay("TrackedEvent", "create", {"app_name": "grove", "event_type": f"k{n}"})
    first = platform.start_worker(extra_env=SLOW_REPUBLISH)
    wait_for(lambda: distinct_events(platform)[0] >= 5, 120, "the first jobs")
    wait_for(lambda: broker_files(platform, "processing"), 60, "a claimed job")
    # Nothing acks or requeues: the main process alone (its pool children are orphaned), or all of them.
    (os.kill if kill == "main process" else os.killpg)(first.pid, signal.SIGKILL)
    first.wait(10)
    claimed = broker_files(platform, "processing")
    done_before = distinct_events(platform)[0]
    assert claimed and done_before < jobs, "nothing was claimed at the kill: nothing was tested"

    second = platform.start_worker(extra_env=SLOW_REPUBLISH)
    wait_for(lambda: distinct_events(platform)[1] == jobs or second.poll() is not None, 240,
             f"all {jobs} jobs done by the second worker")
    assert distinct_events(platform) == (jobs, jobs)  # each effect once, no outbox republish (600 s away)
    assert "back in their queues" in platform.log_of(second)
    wait_for(lambda: broker_files(platform, "processing") == [], 30, "every claim acked")
    assert broker_files(platform, "corrupt") == []


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_empty_and_garbled_files_go_to_corrupt_with_a_logged_error_and_the_worker_goes_on(
    platform: Platform,
) -> None:
    worker = platform.start_worker()
    queue = Path(platform.env["TIMBER_DATA_DIR"]) / "broker" / "queues" / "persistence"
    queue.mkdir(parents=True, exist_ok=True)
    (queue / "00000000000000000001.empty.msg").write_bytes(b"")
    (queue / "00000000000000000002.garbled.msg").write_bytes(b'{"body": "half a mess')
    (queue / "00000000000000000003.deep.msg").write_bytes(b"[" * 200_000 + b"]" * 200_000)  # past the parser's limit
    (queue / "00000000000000000004.folder.msg").mkdir()  # a folder named like a message
    (queue / "00000000000000000005.tag.msg").write_text(json.dumps({"properties": {"delivery_tag": {"a": 1}}}))
    result = platform.task(PERSIST).delay("TrackedEvent", "create", {"app_name": "grove", "event_type": "after"})
    assert result.get(timeout=60)["count"] == 1
    corrupt = sorted(path.name.rsplit(".", 1)[0] for path in (Path(platform.env["TIMBER_DATA_DIR"]) / "broker"
                                                               / "corrupt").iterdir())
    assert corrupt == [f"persistence.0000000000000000000{n}.{kind}.msg"
                       for n, kind in enumerate(["empty", "garbled", "deep", "folder", "tag"], start=1)]
    log = platform.log_of(worker)
    assert "00000000000000000001.empty.msg in queue 'persistence' is not a message" in log
    assert "00000000000000000002.garbled.msg in queue 'persistence' is not a message" in log
    assert "00000000000000000003.deep.msg in queue 'persistence' is not a message (RecursionError)" in log
    assert "00000000000000000005.tag.msg in queue 'persistence' is not a message (its delivery tag" in log
    assert worker.poll() is None and "Unrecoverable error" not in log


@pytest.mark.parametrize("platform", ["embedded"], indirect=True)
def test_links_pipes_long_names_wrong_shapes_and_bad_queue_limits_never_stop_the_worker(platform: Platform) -> None:
    """A breaker's files: each used to kill the worker (or freeze it) again on every restart."""
    broker = Path(platform.env["TIMBER_DATA_DIR"]) / "broker"
    queue = broker / "queues" / "persistence"
    queue.mkdir(parents=True, exist_ok=True)
    long_name = "00000000000000000001." + "a" * 226 + ".msg"  # no room left for the corrupt/ prefix
    (queue / long_name).write_text("x")
    os.mkfifo(queue / "00000000000000000002.fifo.msg")  # opening it for reading would block
    (queue / "00000000000000000003.zero.msg").symlink_to("/dev/zero")  # reading it never ends
    shapes = [{"body": None, "headers": {}, "properties": {"delivery_tag": "t1"}},
              {"body": "x", "headers": "task", "properties": {"delivery_tag": "t2"}},
              {"body": 5, "headers": {"task": PERSIST, "id": "e1"}, "properties": {"delivery_tag": "t3"}},
              {"body": "x", "headers": {"task": ["x"], "id": "e2"}, "properties": {"delivery_tag": "t4"}},
              ["not", "an", "object"]]
    for n, shape in enumerate(shapes, start=4):
        (queue / f"0000000000000000000{n}.shape.msg").write_text(json.dumps(shape))
    (queue / ".meta.json").write_text("[]")  # the sweep reads every queue's limits
    (broker / "queues" / "gdpr").mkdir(exist_ok=True)
    (broker / "queues" / "gdpr" / ".meta.json").write_text('{"message_ttl": "ten"}')
    worker = platform.start_worker()
    result = platform.task(PERSIST).delay("TrackedEvent", "create", {"app_name": "grove", "event_type": "after"})
    assert result.get(timeout=60)["count"] == 1
    time.sleep(6)  # one sweep of the queues' limits (every 5 s) has run
    log = platform.log_of(worker)
    assert worker.poll() is None and "Unrecoverable error" not in log, log[-3000:]
    corrupt = [p.name for p in (broker / "corrupt").iterdir()]
    assert len(corrupt) == 3 + len(shapes), corrupt
    assert any(name.startswith("persistence.00000000000000000001.aaa") and "~" in name for name in corrupt)
    assert "00000000000000000002.fifo.msg in queue 'persistence' is not a message (it is not a regular file)" in log
    assert "00000000000000000003.zero.msg in queue 'persistence' is not a message" in log
    assert "its body is not a string" in log and "its headers are not an object" in log
    assert "its task header is not a string" in log and "it is not a JSON object" in log
    assert "is not a table of queue limits in seconds; ignored" in log
    assert not [p for p in (broker / "processing").rglob("*.msg")]


def test_an_ack_deletes_the_claim_a_requeue_puts_it_back_first_and_a_garbled_table_is_set_aside(
    tmp_path: Path,
) -> None:
    from kombu import Connection, Exchange, Queue

    import timber_tasks.brokers  # noqa: F401 - registers maildir://

    root = tmp_path / "broker"
    queue = Queue("jobs", Exchange("jobs"), "jobs")
    with Connection("maildir://", transport_options={"data_folder": str(root)}) as conn:
        producer = conn.Producer()
        for n in range(3):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="jobs", declare=[queue])
        channel = conn.default_channel
        first = queue(channel).get()
        assert first.payload == {"n": 0} and len(list((root / "processing").rglob("*.msg"))) == 1
        first.requeue()
        assert list((root / "processing").rglob("*.msg")) == []
        again = queue(channel).get()
        assert again.payload == {"n": 0}  # back at the head of its queue
        again.ack()
        assert list((root / "processing").rglob("*.msg")) == [] and queue(channel).get().payload == {"n": 1}

        (root / "control" / "jobs.json").write_text("[[")  # a hand edit gone wrong
        assert channel.get_table("jobs") == []
        assert [p.name.split(".")[0] for p in (root / "corrupt").iterdir()] == ["jobs"]


DEAD_CONSUMER = textwrap.dedent("""
    import sys, time
    from kombu import Connection, Exchange, Queue
    import timber_tasks.brokers
    queue = Queue("events.dead", Exchange("events", type="fanout"), expires=1)
    with Connection("maildir://", transport_options={"data_folder": sys.argv[1]}) as conn:
        consumer = conn.Consumer(queue, callbacks=[lambda body, message: message.ack()])
        consumer.consume()
        print("consuming", flush=True)
        time.sleep(300)
""")


def test_a_dead_consumer_s_expiring_queue_goes_with_its_bindings_and_old_messages_expire(tmp_path: Path) -> None:
    from kombu import Connection, Exchange, Queue

    import timber_tasks.brokers  # noqa: F401 - registers maildir://

    root = tmp_path / "broker"
    dead = subprocess.Popen([sys.executable, "-c", DEAD_CONSUMER, str(root)], stdout=subprocess.PIPE)
    assert dead.stdout is not None and dead.stdout.readline().strip() == b"consuming"
    dead.kill()  # as a SIGKILLed Flower: no cancel, no queue delete
    dead.wait(10)
    dead.stdout.close()
    events = Exchange("events", type="fanout")
    with Connection("maildir://", transport_options={"data_folder": str(root)}) as conn:
        channel = conn.default_channel
        live = Queue("events.live", events, expires=1)
        conn.Consumer(live, callbacks=[lambda body, message: message.ack()]).consume()
        producer = conn.Producer()
        producer.publish({"n": 1}, exchange=events, declare=[events])
        assert {row[2] for row in channel.get_table("events")} == {"events.dead", "events.live"}
        assert (root / "queues" / "events.dead").is_dir()
        time.sleep(1.5)
        channel.expire_queues()
        assert not (root / "queues" / "events.dead").exists()  # deleted, its event with it
        assert {row[2] for row in channel.get_table("events")} == {"events.live"}
        assert (root / "queues" / "events.live").is_dir()  # a live consumer keeps its queue

        short = Queue("short", Exchange("short"), "short", message_ttl=0.5)
        producer.publish({"old": True}, exchange=short.exchange, routing_key="short", declare=[short])
        time.sleep(0.8)
        producer.publish({"new": True}, exchange=short.exchange, routing_key="short")
        channel.expire_queues()
        assert short(channel).get().payload == {"new": True}  # the old one outlived its ttl
        assert short(channel).get() is None
