"""`stallwatch` command line (contract: DESIGN.md "Interfaces")."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from rules.config import RulesError


def _settings():
    from bot.settings import Settings

    return Settings()


def _engine(settings, *, migrate: bool = True):
    from storage import migrate as migrations
    from storage.db import make_engine

    engine = make_engine(settings.database_url)
    if migrate:
        migrations.upgrade(engine)
    return engine


def _rules(settings):
    try:
        return settings.rules
    except RulesError as exc:
        raise click.ClickException(f"the rules file has problems:\n{exc}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot read the rules file: {exc}") from None


def _parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        now = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-11-22T09:00:00Z") from None
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def main(verbose: bool) -> None:
    """Stallwatch: onboarding stall detection for customer-success teams, in Slack."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--socket-mode", is_flag=True, help="Connect to Slack over Socket Mode (needs SLACK_APP_TOKEN).")
@click.option("--no-scheduler", is_flag=True, help="Serve HTTP only; run scans and digests in a `worker`.")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=None, help="HTTP port [default: $PORT or 3000].")
def serve(socket_mode: bool, no_scheduler: bool, host: str, port: int | None) -> None:
    """Run the HTTP server (ingest routes, Slack, health, metrics) and, by default, the scheduler."""
    import uvicorn

    from bot.app import create_app
    from bot.scheduler import Scheduler

    settings = _settings()
    rules = _rules(settings)
    engine = _engine(settings)
    if socket_mode and not (settings.slack_app_token and settings.slack_bot_token):
        raise click.ClickException("--socket-mode needs SLACK_APP_TOKEN (an app-level token, xapp-...) "
                                   "and SLACK_BOT_TOKEN (xoxb-...)")
    app = create_app(settings, engine=engine, socket_mode=socket_mode)
    scheduler = None if no_scheduler else Scheduler(engine, settings, rules)
    app.state.scheduler = scheduler
    # --- Slack real-time pings: the router (scan listener) and the outbox sender thread ---
    slack = _start_slack(engine, settings, rules, scheduler) if settings.slack_enabled else None
    # --- end Slack real-time pings ---
    if scheduler is not None:
        scheduler.start()
    try:
        uvicorn.run(app, host=host, port=port or settings.port, log_level="info", access_log=False)
    finally:
        if scheduler is not None:
            scheduler.shutdown()
        if slack is not None:
            _stop_slack(*slack)


# --- Slack real-time pings (bot/slack/router.py, bot/slack/outbox.py) ---------------------
def _start_slack(engine, settings, rules, scheduler):
    """Route scan changes to the outbox and send it from a thread; returns what _stop_slack needs."""
    import threading

    from bot.slack.client import web_client
    from bot.slack.outbox import OutboxSender
    from bot.slack.router import Router, register

    stop_event, wake_event = threading.Event(), threading.Event()
    router = Router(engine, settings, rules, wake=wake_event)
    register(router)
    if scheduler is not None:
        scheduler.add_router_jobs(router)
        scheduler.digest_wake = wake_event  # daily digest: send its rows at once
    thread = OutboxSender(engine, lambda: web_client(settings, blocking_retries=False)).start(stop_event, wake_event)
    return router, stop_event, wake_event, thread


def _stop_slack(router, stop_event, wake_event, thread) -> None:
    from bot.slack.router import unregister

    unregister(router)
    stop_event.set()
    wake_event.set()
    thread.join(timeout=15)
# --- end Slack real-time pings ----------------------------------------------------------


@main.command()
def worker() -> None:
    """Run the scheduler only (scans; one leader across processes)."""
    from bot.scheduler import Scheduler

    settings = _settings()
    engine, rules = _engine(settings), _rules(settings)
    scheduler = Scheduler(engine, settings, rules)
    # The worker's scans ping too: they go through the same router and outbox as `serve`'s.
    slack = _start_slack(engine, settings, rules, scheduler) if settings.slack_enabled else None
    try:
        scheduler.run_forever()
    finally:
        if slack is not None:
            _stop_slack(*slack)


@main.command("scan")
@click.option("--now", "now_text", default=None, metavar="ISO", help="Evaluate as of this time (default: now).")
@click.option("--full", is_flag=True, default=None,
              help="Evaluate every account a rule could fire on, not only those due (automatic after a rules change).")
def scan_command(now_text: str | None, full: bool | None) -> None:
    """Open, update, auto-resolve and suppress stalls once, then print what changed."""
    from bot.scan import scan

    now = _parse_now(now_text)
    settings = _settings()
    report = scan(_engine(settings), _rules(settings), now, full=full or None)
    click.echo(report.summary())


@main.group()
def rules() -> None:
    """Work with rules files."""


@rules.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def rules_check(file: Path) -> None:
    """Validate a rules file; print every problem with its line and key."""
    from bot.settings import load_rules

    try:
        loaded = load_rules(file)
    except RulesError as exc:
        click.echo(str(exc), err=True)
        click.echo(f"{file}: {len(exc.problems)} problem(s)", err=True)
        sys.exit(1)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    steps = ", ".join(s.event for s in loaded.journey.steps)
    click.echo(f"{file}: ok ({len(loaded.journey.steps)} steps: {steps}; activation: {loaded.journey.activation_event})")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations (run by Procfile's release phase and on `serve` start)."""
    settings = _settings()
    _engine(settings)
    click.echo("database schema is up to date")


@main.command("import-accounts")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def import_accounts(file: Path) -> None:
    """Import or update accounts from a CSV: account_id,name,domain,plan,arr,owner_email,renewal_date."""
    from bot.importer import import_accounts_csv
    from bot.importer_csv import CsvError

    settings = _settings()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    try:
        created, updated = import_accounts_csv(_engine(settings), _rules(settings), text, source=str(file))
    except CsvError as exc:
        click.echo("\n".join(exc.problems), err=True)
        raise click.ClickException(f"{file}: nothing imported ({len(exc.problems)} problem(s) above)") from None
    click.echo(f"{file}: {created} account(s) created, {updated} updated")


# --- daily digest (bot/slack/digest.py) ---------------------------------------------------
@main.command("digest")
@click.option("--dry-run", is_flag=True, help="Print the digest; store and post nothing.")
@click.option("--now", "now_text", default=None, metavar="ISO", help="Build as of this time (default: now).")
def digest_command(dry_run: bool, now_text: str | None) -> None:
    """Post today's digest to STALLWATCH_DIGEST_CHANNEL (once per day and channel)."""
    from bot.slack.digest import post_digest

    now = _parse_now(now_text)
    settings = _settings()
    outcome = post_digest(_engine(settings), settings, _rules(settings), now, dry_run=dry_run)
    if dry_run:
        click.echo(outcome.text, nl=False)
        return
    if outcome.posted:
        note = "" if settings.slack_enabled else " (SLACK_BOT_TOKEN is not set: a running `serve` or `worker` with it sends them)"
        click.echo(f"digest for {outcome.day} queued to {outcome.channel}: {outcome.messages} message(s), "
                   f"{len(outcome.keys)} outbox row(s){note}")
    else:
        click.echo(outcome.reason)
# --- end daily digest ---------------------------------------------------------------------


if __name__ == "__main__":
    main()
