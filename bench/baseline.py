"""Bare task loops: what committing a task, queueing it, consuming it and committing its result costs by itself.

- embedded: a row committed in SQLite (WAL, as mlmarket configures it), an asyncio queue, a consumer that
  commits the result;
- services: a row committed in PostgreSQL, a persistent message published to a durable quorum queue with
  publisher confirms, a consumer (prefetch as the worker's) that commits the result and then acks.

The client waits for the result commit, as an mlmarket client waits for ``succeeded``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
from aio_pika.abc import AbstractIncomingMessage

from bench.measure import summarise_tasks

CONSUMERS = 4  # mlmarket's default worker prefetch
QUEUE = "bench.baseline"
_CREATE = "CREATE TABLE bench_tasks (id TEXT PRIMARY KEY, status TEXT NOT NULL, payload TEXT NOT NULL, result TEXT)"


async def _drive(
    tasks: int, clients: int, rows: list[dict[str, Any]], one: Callable[[dict[str, Any]], Awaitable[None]]
) -> dict[str, Any]:
    latencies: list[float] = []
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        while next_index < tasks:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            await one(rows[index % len(rows)])
            latencies.append(time.perf_counter() - started)

    await one(rows[0])  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return summarise_tasks(tasks, clients, time.perf_counter() - started, latencies)


async def embedded_baseline(path: Path, tasks: int, clients: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    local = threading.local()
    opened: list[sqlite3.Connection] = []
    guard = threading.Lock()

    def connection() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            local.conn = conn
            with guard:
                opened.append(conn)
        return conn

    def write(sql: str, params: tuple[Any, ...]) -> None:
        conn = connection()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, params)
        conn.execute("COMMIT")

    with sqlite3.connect(path) as setup:
        setup.execute(_CREATE)
    queue: asyncio.Queue[tuple[str, asyncio.Future[None]]] = asyncio.Queue()

    async def consumer() -> None:
        while True:
            task_id, done = await queue.get()
            await asyncio.to_thread(
                write, "UPDATE bench_tasks SET status = 'succeeded', result = ? WHERE id = ?", ("1.0", task_id)
            )
            done.set_result(None)

    async def one(row: dict[str, Any]) -> None:
        task_id = str(uuid.uuid4())
        await asyncio.to_thread(
            write, "INSERT INTO bench_tasks VALUES (?, 'queued', ?, NULL)", (task_id, json.dumps(row))
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.put_nowait((task_id, done))
        await done

    consumers = [asyncio.create_task(consumer()) for _ in range(CONSUMERS)]
    try:
        return await _drive(tasks, clients, rows, one)
    finally:
        for c in consumers:
            c.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        for conn in opened:
            conn.close()


@asynccontextmanager
async def _pg_pool(url: str, size: int) -> AsyncIterator[asyncio.Queue[psycopg.AsyncConnection[Any]]]:
    pool: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    conns = [await psycopg.AsyncConnection.connect(url) for _ in range(size)]
    for conn in conns:
        pool.put_nowait(conn)
    try:
        yield pool
    finally:
        for conn in conns:
            await conn.close()


async def _pg_write(pool: asyncio.Queue[psycopg.AsyncConnection[Any]], sql: str, params: tuple[Any, ...]) -> None:
    conn = await pool.get()
    try:
        async with conn.transaction():
            await conn.execute(sql, params)  # type: ignore[arg-type]
    finally:
        pool.put_nowait(conn)


async def services_baseline(
    postgres_url: str, amqp_url: str, tasks: int, clients: int, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as setup:
        await setup.execute(_CREATE)
    waiting: dict[str, asyncio.Future[None]] = {}
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        async with _pg_pool(postgres_url, clients) as client_pool, _pg_pool(postgres_url, CONSUMERS) as worker_pool:
            publish_channel = await connection.channel(publisher_confirms=True)
            consume_channel = await connection.channel()
            await consume_channel.set_qos(prefetch_count=CONSUMERS)
            queue = await consume_channel.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})

            async def on_message(message: AbstractIncomingMessage) -> None:
                task_id = json.loads(message.body)["task_id"]
                await _pg_write(
                    worker_pool,
                    "UPDATE bench_tasks SET status = 'succeeded', result = %s WHERE id = %s",
                    ("1.0", task_id),
                )
                await message.ack()
                done = waiting.pop(task_id, None)
                if done is not None and not done.done():
                    done.set_result(None)

            await queue.consume(on_message)

            async def one(row: dict[str, Any]) -> None:
                task_id = str(uuid.uuid4())
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                waiting[task_id] = done
                await _pg_write(
                    client_pool, "INSERT INTO bench_tasks VALUES (%s, 'queued', %s, NULL)", (task_id, json.dumps(row))
                )
                message = aio_pika.Message(
                    body=json.dumps({"task_id": task_id}).encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=task_id,
                )
                await publish_channel.default_exchange.publish(message, routing_key=QUEUE, mandatory=True)
                await done

            return await _drive(tasks, clients, rows, one)
    finally:
        await connection.close()
