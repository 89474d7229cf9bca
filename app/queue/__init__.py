"""The task queue: one interface, an embedded (in-process) and a real (RabbitMQ) implementation."""

from app.queue.base import PREDICT_QUEUE, Broker, Delivery
from app.queue.factory import make_broker

__all__ = ["PREDICT_QUEUE", "Broker", "Delivery", "make_broker"]
