"""The ``mlmarket`` command: serve, migrate, create-admin, ledger verify, models compile, store gc, demo-init."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

from pydantic import ValidationError

from app.core.config import Settings


def _settings() -> Settings:

    try:
        return Settings()
    except ValidationError as exc:
        messages = "; ".join(str(err.get("msg", "")).removeprefix("Value error, ") for err in exc.errors())
        sys.exit(f"mlmarket: configuration error: {messages}")


KEEP_ALIVE_SECONDS = 75


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.core.logging import configure_logging
    from app.main import create_app, uvicorn_proxy_options

    settings = _settings()
    host = args.host or settings.host
    port = args.port or settings.port
    configure_logging(settings.log_level, settings.log_format)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": settings.log_level,
        **uvicorn_proxy_options(settings),
        "log_config": None,
        # Longer than the idle time of common clients' pools (httpx and requests keep 5 s): a client never
        # sends a request on a connection the server is closing at that very moment.
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }
    if settings.api_workers > 1:  # each worker process builds its app from the same environment
        uvicorn.run("app.main:serve_app", factory=True, workers=settings.api_workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app import migrations

    settings = _settings()
    migrations.upgrade(settings, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter
    from sqlmodel import Session

    from app.core.db import make_engine
    from app.models.user import UserCreate
    from app.services import users

    password = args.password or os.environ.get("MLMARKET_ADMIN_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            sys.exit("mlmarket: give --password, set MLMARKET_ADMIN_PASSWORD, or run in a terminal")
        password = getpass.getpass("Password for the admin: ")
    try:
        TypeAdapter(UserCreate).validate_python({"email": args.email, "password": password})
    except ValidationError as exc:
        sys.exit("mlmarket: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    engine = make_engine(_settings())
    try:
        with Session(engine, expire_on_commit=False) as session:
            user, created = users.ensure_admin(session, email=args.email, password=password, full_name=args.full_name)
    finally:
        engine.dispose()
    print(f"{'created' if created else 'updated'} admin {user.email} (id {user.id})")
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from app.core.db import make_engine
    from app.services import ledger

    engine = make_engine(_settings())
    try:
        with Session(engine) as session:
            report = ledger.verify(session)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.model_dump(), indent=2))
    else:
        print(
            f"accounts checked: {report.accounts_checked}\n"
            f"entries checked:  {report.entries_checked}\n"
            f"credits minted:   {report.total_minted}\n"
            f"balances total:   {report.total_balance}\n"
            f"held in tasks:    {report.total_held}\n"
            f"mismatches:       {len(report.mismatches) + report.running_balance_errors + len(report.hold_errors)}"
        )
        for m in report.mismatches:
            print(f"  account {m.account}: balance {m.balance} != entries {m.entries_sum}")
        for problem in report.hold_errors:
            print(f"  {problem}")
        print("ledger OK" if report.ok else "LEDGER MISMATCH")
    return 0 if report.ok else 1


def cmd_demo_init(args: argparse.Namespace) -> int:
    from app.core.db import make_engine
    from app.services import demo
    from app.store import make_store

    settings = _settings()
    engine = make_engine(settings)
    try:
        report = demo.seed(engine, make_store(settings), settings)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(demo.describe(report), indent=2))
        return 0
    for name in report.published_models:
        print(f"published model {name}")
    for name in report.existing_models:
        print(f"model {name} already in the catalog")
    creds = report.credentials
    print(
        f"demo admin:  {creds.admin_email} / {creds.admin_password}\n"
        f"demo client: {creds.client_email} / {creds.client_password} (balance {report.client_balance} credits)"
    )
    return 0


def cmd_models_compile(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from app.core.db import make_engine
    from app.services import compiling
    from app.store import make_store

    settings = _settings()
    engine = make_engine(settings)
    store = make_store(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            versions = compiling.versions_to_compile(session, args.name, args.force)
            for model in versions:
                compiled = compiling.compile_version(session, store, settings, model)
                session.commit()
                print(f"{model.name} v{model.version}: {compiled.runtime} ({compiled.note})")
    finally:
        engine.dispose()
    if not versions:
        print("nothing to compile" + ("" if args.force else " (every version is compiled; --force compiles again)"))
    return 0


def cmd_store_gc(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from app.core.db import make_engine
    from app.store import gc, make_store

    settings = _settings()
    grace = settings.store_gc_grace_seconds if args.grace_seconds is None else args.grace_seconds
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            sweep = gc.collect(session, make_store(settings), grace_seconds=grace, dry_run=args.dry_run)
    finally:
        engine.dispose()
    if args.json:
        listed = [{"md5": o.md5, "size": o.size, "modified": o.modified.isoformat()} for o in sweep.orphans]
        print(json.dumps({"dry_run": args.dry_run, "orphans": listed, "removed": len(sweep.removed)}, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for obj in sweep.orphans if args.dry_run else sweep.removed:
        print(f"{verb} {obj.md5} ({obj.size} bytes, stored {obj.modified:%Y-%m-%d %H:%M:%S} UTC)")
    done = sweep.orphans if args.dry_run else sweep.removed
    print(
        f"{verb} {len(done)} unused objects ({sum(o.size for o in done)} bytes); kept {sweep.kept_in_use} in use "
        f"and {sweep.kept_recent} unused but younger than {grace:.0f}s"
    )
    return 0 if args.dry_run or len(sweep.removed) == len(sweep.orphans) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlmarket", description="mlmarket prediction marketplace")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument("--host", default=None, help="address to bind (default MLMARKET_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port to bind (default MLMARKET_PORT)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(func=cmd_migrate)

    admin = sub.add_parser("create-admin", help="create an administrator (or promote an existing user)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", default=None, help="or MLMARKET_ADMIN_PASSWORD, or asked for")
    admin.add_argument("--full-name", default=None)
    admin.set_defaults(func=cmd_create_admin)

    demo_cmd = sub.add_parser("demo-init", help="seed the demo users, credits and default models (idempotent)")
    demo_cmd.add_argument("--json", action="store_true", help="print what was done as JSON")
    demo_cmd.set_defaults(func=cmd_demo_init)

    ledger_cmd = sub.add_parser("ledger", help="ledger tools")
    ledger_sub = ledger_cmd.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_sub.add_parser("verify", help="check that every balance equals the sum of its entries")
    verify.add_argument("--json", action="store_true", help="print the full report as JSON")
    verify.set_defaults(func=cmd_ledger_verify)

    models_cmd = sub.add_parser("models", help="catalog tools")
    models_sub = models_cmd.add_subparsers(dest="models_command", required=True)
    compile_cmd = models_sub.add_parser(
        "compile", help="compile catalog versions to ONNX, checked against their scikit-learn pipeline"
    )
    compile_cmd.add_argument("--name", default=None, help="only this model's versions")
    compile_cmd.add_argument("--force", action="store_true", help="compile versions that are compiled already")
    compile_cmd.set_defaults(func=cmd_models_compile)

    store_cmd = sub.add_parser("store", help="artifact store tools")
    store_sub = store_cmd.add_subparsers(dest="store_command", required=True)
    gc_cmd = store_sub.add_parser(
        "gc", help="remove objects no dataset, training job or model uses (failed and deleted jobs' files)"
    )
    gc_cmd.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc_cmd.add_argument(
        "--grace-seconds",
        type=float,
        default=None,
        help="keep unused objects younger than this (default MLMARKET_STORE_GC_GRACE_SECONDS)",
    )
    gc_cmd.add_argument("--json", action="store_true", help="print the objects found as JSON")
    gc_cmd.set_defaults(func=cmd_store_gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
