"""Webhook delivery: consumes ``webhooks.deliver``, POSTs each event signed, records every attempt.

A message names an event (app.services.webhooks.record_events wrote it with its outbox row when the task started
or finished). Each attempt is counted and its outcome recorded; an answer other than 2xx raises, so the broker
retries the message after an exponential backoff and dead-letters it after ``webhook_max_attempts``, when the
event is given up. A task never waits for any of this.

Receivers are reached safely: the host is resolved once, every address it resolves to must be allowed (public
unicast, unless ``webhook_allow_private``), and the request goes to the address that was checked (TLS still
verifies the certificate of the host name), so a name that resolves differently a moment later (DNS rebinding)
cannot redirect it. Redirects are not followed, and the answer's body is not read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app import __version__
from app.core.config import Settings
from app.models.catalog import ModelVersion
from app.models.task import Task, TaskPublic
from app.models.training import TrainingJob, TrainingJobPublic, TrainingShard, TrainingShardPublic
from app.queue.base import WEBHOOK_QUEUE, Broker, ConsumerOptions, Delivery
from app.services import predictions, webhook_addresses, webhook_signing, webhooks

log = logging.getLogger("mlmarket.webhooks")


class WebhookFailed(RuntimeError):
    """An attempt did not deliver the event; its message is retried after the backoff."""


class Refused(RuntimeError):
    """The receiver's address is one webhooks may not reach."""


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None


class WebhookSender:
    """POSTs to receivers over connections to addresses it has checked; never follows a redirect."""

    def __init__(self, *, timeout: float, allow_private: bool, verify: ssl.SSLContext | bool = True) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        # No proxies from the environment (they would connect to the name, not the checked address) and no kept
        # connections (one made for one host name is not reused for another name on the same address).
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            verify=verify,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def resolve(self, url: httpx.URL) -> list[str]:
        """The addresses to connect to, in order, once every address the host has is allowed."""
        host = url.raw_host.decode("ascii")  # IDNA-encoded, as resolvers and TLS want it
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise Refused(f"cannot resolve {host}: {exc or 'timed out'}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise Refused(f"{host} has no address")
        forbidden = [a for a in addresses if not webhook_addresses.address_allowed(a, allow_private=self.allow_private)]
        if forbidden:
            raise Refused(
                f"{host} resolves to {forbidden[0]}, a private, loopback, link-local or reserved address "
                "(MLMARKET_WEBHOOK_ALLOW_PRIVATE allows it for local use)"
            )
        return addresses

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        try:
            target = httpx.URL(url)
            if target.scheme not in ("https", "http") or not target.host:
                raise Refused("not an http(s) URL")
            if target.scheme == "http" and not self.allow_private:
                raise Refused("http receivers need MLMARKET_WEBHOOK_ALLOW_PRIVATE; use https")
            addresses = await self.resolve(target)
        except (Refused, httpx.InvalidURL) as exc:
            return Outcome(None, f"refused: {exc}")
        request_headers = {**headers, "host": target.netloc.decode("ascii")}
        # TLS: the server name (SNI) and the certificate check are for the host name, not the address dialled.
        extensions = {"sni_hostname": target.raw_host.decode("ascii")} if target.scheme == "https" else {}
        try:
            async with asyncio.timeout(self.timeout * 2):
                for n, address in enumerate(addresses, start=1):
                    request = self._client.build_request(
                        "POST", target.copy_with(host=address), content=body, headers=request_headers
                    )
                    request.extensions.update(extensions)
                    try:
                        response = await self._client.send(request, stream=True)
                    except httpx.ConnectError:
                        if n == len(addresses):
                            raise
                        continue  # the next checked address of the host
                    await response.aclose()
                    return Outcome(
                        response.status_code, None if response.is_success else f"HTTP {response.status_code}"
                    )
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(None, f"timed out after {self.timeout:g}s")
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
        return Outcome(None, "no address answered")  # pragma: no cover - the loop returns or raises


# A ``started`` event first delivered after its task finished shows the task as it was when it started.
_AS_STARTED = {"status": "running", "finished_at": None, "error": None}


def body_of(session: Session, kind: str, task_id: str, event: str) -> bytes | None:
    """The JSON a receiver gets: the task as GET /api/v1/predictions/{id} (or the training job as
    GET /api/v1/training-jobs/{id}) shows it, at the event."""
    started = event == webhooks.STARTED.value
    if kind == webhooks.PREDICTION:
        task = session.get(Task, task_id)
        if task is None:
            return None
        model = session.get(ModelVersion, task.model_version_id)
        public = TaskPublic.model_validate(
            task,
            update={
                "model": model.name if model else "",
                "version": model.version if model else 0,
                "results": None if started else predictions.aligned_results(task),
                **(_AS_STARTED if started else {}),
            },
        )
        return public.model_dump_json().encode()
    if kind == webhooks.TRAINING_JOB:
        job = session.get(TrainingJob, task_id)
        if job is None:
            return None
        shards = []
        if job.shards > 1:
            rows = session.exec(
                select(TrainingShard).where(TrainingShard.job_id == job.id).order_by(TrainingShard.index)  # type: ignore[arg-type]
            ).all()
            shards = [TrainingShardPublic.model_validate(s) for s in rows]
        update: dict[str, Any] = {"deleted": job.deleted_at is not None, "shard_status": shards}
        if started:
            update.update(_AS_STARTED, metrics=None, duration_seconds=None, artifact_md5=None)
        return TrainingJobPublic.model_validate(job, update=update).model_dump_json().encode()
    return None


class WebhookWorker:
    def __init__(self, settings: Settings, engine: Engine, sender: WebhookSender | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.sender = sender or WebhookSender(
            timeout=settings.webhook_timeout_seconds, allow_private=settings.webhook_allow_private
        )
        self.delivered = 0

    def options(self) -> ConsumerOptions:
        return ConsumerOptions(
            prefetch=self.settings.webhook_concurrency,
            max_attempts=self.settings.webhook_max_attempts,
            retry_base_delay=self.settings.webhook_retry_base_seconds,
            max_retry_delay=self.settings.webhook_retry_max_seconds,
            delay_queues=True,
        )

    async def start(self, broker: Broker) -> None:
        await broker.consume(WEBHOOK_QUEUE, self.handle, self.on_dead, self.options())

    async def handle(self, delivery: Delivery) -> None:
        event_id = delivery.payload.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            log.error("webhook message %s names no event; dropping it", delivery.message_id)
            return
        attempt = await asyncio.to_thread(
            webhooks.claim_attempt, self.engine, event_id, body_of, self.settings.webhook_max_attempts
        )
        if attempt is None:
            return  # delivered, given up or unknown: a duplicate message
        headers = {
            "content-type": "application/json",
            "user-agent": f"mlmarket-webhooks/{__version__}",
            **webhook_signing.signed_headers(attempt.secrets, attempt.event_id, int(time.time()), attempt.body),
        }
        started = time.perf_counter()
        outcome = await self.sender.post(attempt.url, attempt.body, headers)
        duration_ms = int((time.perf_counter() - started) * 1000)
        delivered = await asyncio.to_thread(
            webhooks.record_attempt,
            self.engine,
            attempt,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=duration_ms,
        )
        if not delivered:
            raise WebhookFailed(f"event {attempt.event_id} to {attempt.url}: {outcome.error}")
        self.delivered += 1
        log.info("webhook %s delivered to %s (attempt %d)", attempt.event_id, attempt.url, attempt.number)

    async def on_dead(self, delivery: Delivery, reason: str) -> None:
        event_id = delivery.payload.get("event_id")
        if isinstance(event_id, str) and event_id:
            await asyncio.to_thread(
                webhooks.give_up, self.engine, event_id, f"gave up after {delivery.attempt} attempts: {reason}"
            )
