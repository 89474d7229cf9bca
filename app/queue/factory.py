"""Picks the broker the settings ask for: embedded (in-process) without a broker URL, RabbitMQ with one."""

from __future__ import annotations

from app.core.config import Settings
from app.queue.base import Broker
from app.queue.embedded import EmbeddedBroker


def make_broker(settings: Settings) -> Broker:
    if settings.broker_url is None:
        return EmbeddedBroker()
    # Imported here so the embedded default never loads the AMQP client.
    from app.queue.rabbitmq import RabbitBroker

    return RabbitBroker(settings.broker_url, quorum=settings.broker_quorum_queues)
