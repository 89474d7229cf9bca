"""Both brokers keep the same promises: confirmed publishes, retries with backoff, then the dead-letter queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.queue.base import Broker, ConsumerOptions, Delivery, backoff_seconds, dead_queue
from app.queue.embedded import EmbeddedBroker
from app.queue.rabbitmq import RabbitBroker

QUEUE = "tasks.predict"


@pytest.fixture(params=["embedded", "rabbitmq"])
def make_broker(request: pytest.FixtureRequest) -> Callable[[], Broker]:
    if request.param == "embedded":
        return EmbeddedBroker
    url = request.getfixturevalue("rabbitmq_url")
    return lambda: RabbitBroker(url)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=60))  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def test_published_messages_are_consumed_once_each(make_broker: Callable[[], Broker]) -> None:
    async def scenario() -> list[dict[str, Any]]:
        broker = make_broker()
        await broker.connect()
        seen: list[dict[str, Any]] = []

        async def handler(delivery: Delivery) -> None:
            seen.append(delivery.payload)

        async def on_dead(delivery: Delivery, reason: str) -> None:
            raise AssertionError("nothing should be dead-lettered")

        for i in range(20):
            await broker.publish(QUEUE, {"task_id": f"t{i}"}, message_id=f"t{i}")
        await broker.consume(QUEUE, handler, on_dead, ConsumerOptions(prefetch=4))
        await wait_until(lambda: len(seen) == 20)
        await asyncio.sleep(0.3)
        assert await broker.queue_depth(QUEUE) == 0
        await broker.close()
        return seen

    seen = run(scenario())
    assert sorted(p["task_id"] for p in seen) == sorted(f"t{i}" for i in range(20))


def test_a_failing_message_is_retried_then_dead_lettered(make_broker: Callable[[], Broker]) -> None:
    async def scenario() -> tuple[list[int], list[tuple[str, str]], int]:
        broker = make_broker()
        await broker.connect()
        attempts: list[int] = []
        dead: list[tuple[str, str]] = []

        async def handler(delivery: Delivery) -> None:
            attempts.append(delivery.attempt)
            raise RuntimeError("model artifact is corrupted")

        async def on_dead(delivery: Delivery, reason: str) -> None:
            dead.append((delivery.payload["task_id"], reason))

        await broker.consume(QUEUE, handler, on_dead, ConsumerOptions(prefetch=2, max_attempts=3, retry_base_delay=0.1))
        await broker.publish(QUEUE, {"task_id": "bad"}, message_id="bad")
        await wait_until(lambda: len(dead) == 1)
        await asyncio.sleep(0.5)  # nothing more arrives after the dead-letter
        dead_depth = (
            await broker.queue_depth(dead_queue(QUEUE))
            if isinstance(broker, RabbitBroker)
            else len(
                broker.dead_letters  # type: ignore[attr-defined]
            )
        )
        await broker.close()
        return attempts, dead, dead_depth

    attempts, dead, dead_depth = run(scenario())
    assert attempts == [1, 2, 3]
    assert dead == [("bad", "RuntimeError: model artifact is corrupted")]
    assert dead_depth == 1


def test_a_message_recovers_when_a_retry_succeeds(make_broker: Callable[[], Broker]) -> None:
    async def scenario() -> list[int]:
        broker = make_broker()
        await broker.connect()
        attempts: list[int] = []

        async def handler(delivery: Delivery) -> None:
            attempts.append(delivery.attempt)
            if delivery.attempt == 1:
                raise ConnectionError("database restarting")

        async def on_dead(delivery: Delivery, reason: str) -> None:
            raise AssertionError("should have recovered")

        await broker.consume(QUEUE, handler, on_dead, ConsumerOptions(max_attempts=3, retry_base_delay=0.1))
        await broker.publish(QUEUE, {"task_id": "flaky"}, message_id="flaky")
        await wait_until(lambda: attempts == [1, 2])
        await asyncio.sleep(0.3)
        await broker.close()
        return attempts

    assert run(scenario()) == [1, 2]


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(a, 1.0) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_seconds(30, 1.0) == 60.0


def test_rabbitmq_messages_are_persistent_and_survive_the_publisher(rabbitmq_url: str) -> None:
    async def scenario() -> list[str]:
        publisher = RabbitBroker(rabbitmq_url)
        await publisher.connect()
        for i in range(5):
            await publisher.publish(QUEUE, {"task_id": f"p{i}"}, message_id=f"p{i}")
        assert await publisher.queue_depth(QUEUE) == 5
        await publisher.close()

        consumer = RabbitBroker(rabbitmq_url)
        seen: list[str] = []

        async def handler(delivery: Delivery) -> None:
            seen.append(delivery.payload["task_id"])

        async def on_dead(delivery: Delivery, reason: str) -> None:
            raise AssertionError

        await consumer.consume(QUEUE, handler, on_dead, ConsumerOptions())
        await wait_until(lambda: len(seen) == 5)
        await consumer.close()
        return seen

    assert sorted(run(scenario())) == [f"p{i}" for i in range(5)]


def test_an_unreachable_broker_fails_to_publish() -> None:
    async def scenario() -> None:
        broker = RabbitBroker("amqp://guest:guest@127.0.0.1:9/")
        with pytest.raises((ConnectionError, OSError)):
            await broker.publish(QUEUE, {"task_id": "x"}, message_id="x")

    run(scenario())
