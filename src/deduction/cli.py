"""The `deduction` command: serve, worker, projector, engine, projections, db, audit, tokens."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from deduction.config import Settings, SettingsError, auth_enabled, check_exposure, load_settings
from deduction.logging import configure_logging

log = structlog.get_logger(__name__)


def _progress(name: str, position: int, head: int) -> None:
    width = 30
    done = int(width * position / head) if head else width
    sys.stderr.write(f"\r{name:<10} [{'#' * done}{'.' * (width - done)}] {position}/{head}")
    if position >= head:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def _projections_status(settings: Settings) -> int:
    from psycopg import AsyncConnection

    from deduction.bootstrap import resolve_database_url
    from deduction.projections.runner import status

    url = await asyncio.to_thread(resolve_database_url, settings)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        rows = await status(conn)
    print(f"{'projection':<12}{'position':>12}{'head':>12}{'lag':>10}{'parked':>8}")
    for r in rows:
        print(f"{r.name:<12}{r.position:>12}{r.head:>12}{r.lag:>10}{r.parked:>8}")
    if any(r.parked for r in rows):
        print("parked events: see `deduction projections dead-letters`")
    return 0


async def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    """List, retry or skip the events a projection could not apply."""
    from psycopg import AsyncConnection

    from deduction.bootstrap import resolve_database_url
    from deduction.projections import dead_letters as letters
    from deduction.projections.runner import all_projections

    url = await asyncio.to_thread(resolve_database_url, settings)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        if args.action == "dead-letters":
            for d in await letters.dead_letters(conn):
                print(f"{d.projection}\t{d.position}\t{d.status}\t{d.event_type}"
                      f"\t{d.attempts}\t{d.failed_at.isoformat()}\t{d.error}")  # fmt: skip
            return 0
        names = [args.projection] if args.projection else []
        if args.action == "skip":
            done = await letters.skip(conn, args.position, names)
        else:
            chosen = [p for p in all_projections() if not names or p.name in names]
            done = await letters.retry(conn, args.position, chosen)
    if not done:
        print(f"deduction: no parked event at position {args.position}", file=sys.stderr)
        return 1
    for name, ok in done.items():
        print(f"{name}: {args.action} {'done' if ok else 'failed again (still parked)'}")
    return 0 if all(done.values()) else 1


async def _projections_rebuild(settings: Settings, names: Sequence[str]) -> int:
    import time

    from deduction.adapters.postgres import eventsourcing_env
    from deduction.application.service import DeductionApp
    from deduction.bootstrap import resolve_database_url
    from deduction.projections.runner import rebuild

    url = await asyncio.to_thread(resolve_database_url, settings)
    await asyncio.to_thread(lambda: DeductionApp(env=eventsourcing_env(url)).close())
    started = time.perf_counter()
    applied = await rebuild(url, names or None, on_progress=_progress)
    took = time.perf_counter() - started
    total = sum(applied.values())
    print(
        f"rebuilt {', '.join(applied)}: {total} events in {took:.1f}s"
        f" ({total / took if took else 0:,.0f} events/s)"
    )
    return 0


async def _serve(settings: Settings, demo: bool, with_engine: bool = False) -> int:
    import contextlib

    import uvicorn

    from deduction.adapters.http.app import create_app
    from deduction.application.catalog_import import demo_catalog, load_catalog
    from deduction.bootstrap import open_dispatch, open_services

    async with contextlib.AsyncExitStack() as stack:
        if with_engine:
            await stack.enter_async_context(_local_engine(settings))
        services = await stack.enter_async_context(open_services(settings))
        await stack.enter_async_context(open_dispatch(services))
        if demo:
            position = await services.run_sync(load_catalog, services.app, demo_catalog())
            await services.runner.wait_for(position, 10)
        config = uvicorn.Config(
            create_app(services),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            access_log=False,  # the request-id wrapper logs each answer (http.answered, DEBUG)
            lifespan="on",
        )
        log.info(
            "api.started",
            url=f"http://{settings.api_host}:{settings.api_port}",
            database="external" if settings.database_url else "embedded",
            worker="arq" if settings.redis_url else "in-process",
            auth="on" if auth_enabled(settings) else "off",
        )
        if not auth_enabled(settings):
            log.warning("api.open", reason="no authentication is configured"
                        if settings.auth_mode == "auto" else "AUTH_MODE=off",
                        note="anyone who reaches this address may call every endpoint;"
                        " set AUTH_MODE=on to require tokens")  # fmt: skip
        await uvicorn.Server(config).serve()
    return 0


def _local_engine(settings: Settings) -> Any:
    """The reference Engine on ENGINE_URL's host and port (for `make run`)."""
    from urllib.parse import urlsplit

    from deduction.config import data_path
    from deduction.reference_engine.server import ReferenceEngine, serve_reference_engine

    url = urlsplit(settings.engine_url)
    host, port = url.hostname or "127.0.0.1", url.port or 8080
    engine = ReferenceEngine(state_dir=data_path(settings) / "engine")  # runs survive a restart
    log.info("engine.started", url=f"http://{host}:{port}", kind="reference",
             state_dir=str(data_path(settings) / "engine"), restored_runs=engine.restored)  # fmt: skip
    return serve_reference_engine(engine, host, port)


async def _engine(args: argparse.Namespace) -> int:
    from deduction.reference_engine.server import run_reference_engine
    from deduction.reference_engine.simulation import Knobs

    knobs = Knobs(
        seed=args.seed, latency=args.latency, error_rate=args.error_rate,
        drop_rate=args.drop_rate, since_inclusive=args.since == "inclusive",
        ts_resolution=args.ts_resolution, log_rate=args.log_rate, fail_rate=args.fail_rate,
        collide_rate=args.collide_rate, duration_min=args.duration[0],
        duration_max=args.duration[1], extras=args.extras, restart=not args.no_restart,
        page_cap=args.page_cap, since_resolution=args.since_resolution,
        malformed_rate=args.malformed_rate, zero_time_rate=args.zero_time_rate,
        seq_restart=args.seq_restart, burst=args.burst, stall_rate=args.stall_rate,
        stall_seconds=args.stall_seconds, reject_updates=args.reject_updates,
    )  # fmt: skip
    log.info("engine.started", url=f"http://{args.host}:{args.port}", seed=args.seed,
             state_dir=str(args.state_dir) if args.state_dir else None)  # fmt: skip
    await run_reference_engine(knobs, args.host, args.port, args.state_dir)
    return 0


async def _projector(settings: Settings) -> int:
    from deduction.bootstrap import run_projector

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_projector(settings, stop)
    return 0


def _worker(settings: Settings) -> int:
    from deduction.adapters.worker.arq_worker import ResilientWorker, worker_loop
    from deduction.bootstrap import arq_worker_settings, serve_worker_metrics

    worker_loop()
    worker = ResilientWorker(**arq_worker_settings(settings))
    with serve_worker_metrics(settings):
        worker.run()
    return 0


def _duration(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def _add_engine_parser(sub: Any) -> None:
    engine = sub.add_parser("engine", help="run the reference Engine (the plan's API 4.1)")
    add = engine.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8080)
    add("--seed", type=int, default=0, help="same seed, same runs")
    add("--latency", type=float, default=0.0, help="seconds added to every Engine call")
    add("--error-rate", type=float, default=0.0, help="share of calls answered 503")
    add("--drop-rate", type=float, default=0.0, help="share of calls dropped unanswered")
    add("--since", choices=["exclusive", "inclusive"], default="exclusive",
        help="whether logs?since=T includes lines stamped T")  # fmt: skip
    add("--ts-resolution", choices=["us", "ms", "s"], default="ms", help="log timestamp resolution")
    add("--log-rate", type=float, default=2.0, help="log lines per second per agent")
    add("--fail-rate", type=float, default=0.1, help="share of agent attempts that fail")
    add("--collide-rate", type=float, default=0.2, help="share of lines reusing a timestamp")
    add("--duration", type=_duration, default=(20.0, 60.0), metavar="MIN:MAX",
        help="seconds an agent runs")  # fmt: skip
    add("--extras", action="store_true", help="add optional fields (agent ref, log seq)")
    add("--no-restart", action="store_true", help="offer no agent restart operation")
    add("--page-cap", type=int, default=0, help="at most N lines per logs answer, unannounced")
    add("--since-resolution", choices=["us", "ms", "s"], default="us",
        help="cut `since` to this resolution before comparing")  # fmt: skip
    add("--malformed-rate", type=float, default=0.0, help="share of log lines sent broken")
    add("--zero-time-rate", type=float, default=0.0,
        help="share of log lines stamped 0001-01-01T00:00:00Z")  # fmt: skip
    add("--seq-restart", action="store_true", help="number log lines from 0 on every attempt")
    add("--burst", type=int, default=0, help="lines at one instant when an attempt starts")
    add("--stall-rate", type=float, default=0.0, help="share of calls that stall")
    add("--stall-seconds", type=float, default=30.0, help="how long a stalled call waits")
    add("--reject-updates", metavar="MESSAGE", help="answer every update 422 with MESSAGE")
    add(
        "--state-dir",
        type=Path,
        default=None,
        help="keep runs on disk here and carry on after a restart (default: in memory only)",
    )


async def _db_url(settings: Settings) -> int:
    from deduction.bootstrap import resolve_database_url

    print(await asyncio.to_thread(resolve_database_url, settings))
    return 0


async def _load_catalog(settings: Settings, path: Path | None) -> int:
    from deduction.adapters.postgres import eventsourcing_env
    from deduction.application.catalog_import import demo_catalog, load_catalog, read_catalog_file
    from deduction.application.service import DeductionApp
    from deduction.bootstrap import resolve_database_url

    url = await asyncio.to_thread(resolve_database_url, settings)
    app = DeductionApp(env=eventsourcing_env(url))
    try:
        load_catalog(app, read_catalog_file(path) if path else demo_catalog())
    finally:
        app.close()
    print("catalog loaded")
    return 0


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _loop_factory() -> Any:
    """uvloop where it is installed (Linux, macOS): a faster event loop, same semantics."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deduction", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the HTTP API (and, without REDIS_URL, the worker)")
    serve.add_argument("--demo", action="store_true", help="load the demo catalog first")
    serve.add_argument("--with-engine", action="store_true",
                       help="also run the reference Engine on ENGINE_URL's port")  # fmt: skip
    sub.add_parser("worker", help="run an arq worker (needs REDIS_URL)")
    sub.add_parser("projector", help="keep the read tables up to date (as `serve` also does)")
    _add_engine_parser(sub)
    proj = sub.add_parser("projections", help="inspect or rebuild the read tables")
    proj_sub = proj.add_subparsers(dest="action", required=True)
    proj_sub.add_parser("status", help="position and lag of each projection")
    rebuild = proj_sub.add_parser("rebuild", help="drop and replay read tables from the events")
    rebuild.add_argument("names", nargs="*", help="projections to rebuild (default: all)")
    proj_sub.add_parser("dead-letters", help="events a projection could not apply, and why")
    for action, text in (("retry", "apply a parked event again (after a fix)"),
                         ("skip", "leave a parked event unapplied (until a rebuild)")):  # fmt: skip
        letter = proj_sub.add_parser(action, help=text)
        letter.add_argument("position", type=int, help="the event's position (notification id)")
        letter.add_argument("--projection", help="only this projection (default: every one)")
    db = sub.add_parser("db", help="database helpers")
    db_sub = db.add_subparsers(dest="action", required=True)
    db_sub.add_parser("url", help="print the database URL (starting the embedded server if needed)")
    load = db_sub.add_parser("load-catalog", help="load a catalog JSON file (default: the demo)")
    load.add_argument("path", nargs="?", type=Path)
    _add_audit_parser(sub)
    _add_tokens_parser(sub)
    return parser


def _add_tokens_parser(sub: Any) -> None:
    from deduction.domain.tokens import GRANTS

    tokens = sub.add_parser("tokens", help="issue, list and revoke API tokens")
    tokens_sub = tokens.add_subparsers(dest="action", required=True)
    create = tokens_sub.add_parser("create", help="issue a token (printed once, hash stored)")
    create.add_argument("--name", required=True, help="the principal recorded as operator")
    create.add_argument("--role", action="append", required=True, choices=GRANTS,
                        help="repeat for several; on_behalf: may name others in X-Operator")  # fmt: skip
    create.add_argument("--expires", help="lifetime such as 30d, 12h, 15m (default: never)")
    tokens_sub.add_parser("list", help="every token: id, name, roles, state, expiry")
    revoke = tokens_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")


async def _tokens(settings: Settings, args: argparse.Namespace) -> int:
    from deduction.adapters import token_cli
    from deduction.bootstrap import resolve_database_url

    url = await asyncio.to_thread(resolve_database_url, settings)
    if args.action == "create":
        return await token_cli.create(url, args.name, args.role, args.expires)
    if args.action == "revoke":
        return await token_cli.revoke(url, args.token_id)
    return await token_cli.list_tokens(url)


def _add_audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="prove the record intact, export or replay a task")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    verify = audit_sub.add_parser("verify", help="check the event chain; name the first change")
    verify.add_argument("--task", type=int, help="only this task's events")
    verify.add_argument("--checkpoint", help="POSITION:DIGEST from `audit checkpoint`")
    verify.add_argument("--file", type=Path, help="check an export file (no database needed)")
    audit_sub.add_parser("checkpoint", help="print the chain's head POSITION:DIGEST")
    export = audit_sub.add_parser("export", help="write a task's events as JSON Lines")
    export.add_argument("task_id", type=int)
    export.add_argument("-o", "--output", type=Path, help="default: task-ID.audit.jsonl")
    replay = audit_sub.add_parser("replay", help="print a task's timeline")
    replay.add_argument("task_id", type=int)
    replay.add_argument("--as-of", type=datetime.fromisoformat, help="RFC 3339: stop there")


async def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from deduction.adapters import audit_cli
    from deduction.bootstrap import resolve_database_url

    if args.action == "verify" and args.file:
        return audit_cli.verify_export(args.file)
    url = await asyncio.to_thread(resolve_database_url, settings)
    if args.action == "verify":
        return await audit_cli.verify(url, args.task, args.checkpoint)
    if args.action == "checkpoint":
        return await audit_cli.print_checkpoint(url)
    if args.action == "export":
        return await audit_cli.export(url, args.task_id, args.output)
    return await audit_cli.replay(url, args.task_id, args.as_of)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"deduction: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "worker":
        try:
            return _worker(settings)
        except LookupError as e:
            print(f"deduction: {e}", file=sys.stderr)
            return 2
    if args.command == "serve":
        try:
            check_exposure(settings)
        except SettingsError as e:
            print(f"deduction: {e}", file=sys.stderr)
            return 2
        coro = _serve(settings, args.demo, args.with_engine)
    elif args.command == "projector":
        coro = _projector(settings)
    elif args.command == "engine":
        coro = _engine(args)
    elif args.command == "projections" and args.action == "status":
        coro = _projections_status(settings)
    elif args.command == "projections" and args.action == "rebuild":
        coro = _projections_rebuild(settings, args.names)
    elif args.command == "projections":
        coro = _dead_letters(settings, args)
    elif args.command == "audit":
        coro = _audit(settings, args)
    elif args.command == "tokens":
        coro = _tokens(settings, args)
    elif args.command == "db" and args.action == "url":
        coro = _db_url(settings)
    else:
        coro = _load_catalog(settings, args.path)
    # SIGTERM ends the process like Ctrl-C: cleanly, so exit handlers (which stop an
    # embedded PostgreSQL this process started) run.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(coro)
    except KeyboardInterrupt:
        return 130
    except LookupError as e:
        print(f"deduction: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
