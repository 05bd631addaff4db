"""`stallwatch` command line (contract: DESIGN.md "Interfaces")."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import click

from bot import logsafe
from bot.export import EXPORTERS
from bot.export import FORMATS as EXPORT_FORMATS
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
    logsafe.install()  # customer text can neither forge log lines nor leak emails into them
    if not verbose:  # migrations say what they do at INFO on every command; only -v wants that
        logging.getLogger("alembic").setLevel(logging.WARNING)


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
    from bot.stalls.context import Services

    settings = _settings()
    rules = _rules(settings)
    engine = _engine(settings)
    if socket_mode and not (settings.slack_app_token and settings.slack_bot_token):
        raise click.ClickException("--socket-mode needs SLACK_APP_TOKEN (an app-level token, xapp-...) "
                                   "and SLACK_BOT_TOKEN (xoxb-...)")
    services = Services(engine=engine, settings=settings, rules=rules)  # shared by the app and its senders
    app = create_app(socket_mode=socket_mode, services=services)
    scheduler = None if no_scheduler else Scheduler(engine, settings, rules, change_hooks=services.change_hooks,
                                                      wakeups=services.wakeups)
    app.state.scheduler = scheduler
    # --- Slack real-time pings: the router (scan listener) and the outbox sender thread ---
    slack = _start_slack(services, scheduler) if settings.slack_enabled else None
    # --- end Slack real-time pings ---
    mail = _start_mail(services)
    if scheduler is not None:
        scheduler.start()
    from bot.serving import raise_open_file_limit, tune_gc, uvicorn_options

    options = uvicorn_options(raise_open_file_limit())  # limits: see bot/serving.py and the README
    tune_gc()  # start-up objects out of the collector's way (bot/serving.py)
    logging.getLogger("stallwatch.serve").info(
        "limits: %(limit_concurrency)s connections, headers within %(header)ss and %(h11_max_incomplete_event_size)s "
        "bytes, keep-alive %(timeout_keep_alive)ss", {**options, "header": options["http"].header_timeout})
    try:
        uvicorn.run(app, host=host, port=port or settings.port, log_level="info", access_log=False, **options)
    finally:
        if scheduler is not None:
            scheduler.shutdown()
        if mail is not None:
            _stop_thread(*mail)
        if slack is not None:
            _stop_slack(services, *slack)


# --- Slack real-time pings (bot/slack/router.py, bot/slack/outbox.py) ---------------------
def _start_slack(services, scheduler):
    """Route scan changes to the outbox and send it from a thread; returns what _stop_slack needs."""
    import threading

    from bot.slack.client import web_client
    from bot.slack.outbox import OutboxSender
    from bot.slack.owners import OwnerResolver
    from bot.slack.router import Router

    from bot.slack.health import check_at_start

    engine, settings, rules = services.engine, services.settings, services.rules

    # A revoked token (the mark clears once auth.test passes) and channels the bot is not in
    check_at_start(engine, settings, web_client(settings, blocking_retries=False, timeout=5))
    stop_event, wake_event = threading.Event(), services.wakeups.slack_outbox
    # Owners' Slack users: every CSM mapped now, in the background (bot/slack/owners.py).
    owners = OwnerResolver(engine, settings, rules, wakeups=services.wakeups)
    router = Router(engine, settings, rules, wakeups=services.wakeups, owners=owners)
    services.change_hooks.append(router.handle)
    if scheduler is not None:
        scheduler.add_router_jobs(router)
        scheduler.add_owner_jobs(owners)
    thread = OutboxSender(engine, lambda: web_client(settings, blocking_retries=False),
                          rules=rules).start(stop_event, wake_event)
    owners.start(stop_event)  # stopped by the same event: joined through router.owners
    return router, stop_event, wake_event, thread


def _stop_slack(services, router, stop_event, wake_event, thread) -> None:
    services.change_hooks.remove(router.handle)
    stop_event.set()
    wake_event.set()
    thread.join(timeout=15)
    if router.owners.thread is not None:
        router.owners.thread.join(timeout=15)
# --- end Slack real-time pings ----------------------------------------------------------


# --- recovery emails (bot/mail/outbox.py) -------------------------------------------------
def _start_mail(services):
    """Send approved recovery emails from a thread; None (and a log line saying why) when
    SMTP is not configured: approved emails then wait in the outbox."""
    import threading

    from bot.mail.outbox import MailSender, mail_configured
    from bot.slack.mail_notices import mail_outcome

    engine, settings, rules = services.engine, services.settings, services.rules
    why_not = mail_configured(settings)
    if why_not:
        logging.getLogger("stallwatch.mail").warning("recovery emails will not be sent: %s", why_not)
        return None
    stop_event = threading.Event()
    sender = MailSender(engine, settings, rules, on_outcome=lambda conn, outcome: mail_outcome(services, conn, outcome))
    wake_event = services.wakeups.mail_outbox
    return stop_event, wake_event, sender.start(stop_event, wake_event)


def _stop_thread(stop_event, wake_event, thread) -> None:
    stop_event.set()
    wake_event.set()
    thread.join(timeout=130)  # the mail sender stops between emails; one delivery is cut off at 2 min
# --- end recovery emails ------------------------------------------------------------------


@main.command()
def worker() -> None:
    """Run the scheduler only (scans; one leader across processes)."""
    from bot.scheduler import Scheduler
    from bot.stalls.context import Services

    settings = _settings()
    engine, rules = _engine(settings), _rules(settings)
    services = Services(engine=engine, settings=settings, rules=rules)
    scheduler = Scheduler(engine, settings, rules, change_hooks=services.change_hooks, wakeups=services.wakeups)
    # The worker's scans ping too: they go through the same router and outbox as `serve`'s.
    slack = _start_slack(services, scheduler) if settings.slack_enabled else None
    mail = _start_mail(services)
    try:
        scheduler.run_forever()
    finally:
        if mail is not None:
            _stop_thread(*mail)
        if slack is not None:
            _stop_slack(services, *slack)


@main.command("scan")
@click.option("--now", "now_text", default=None, metavar="ISO", help="Evaluate as of this time (default: now).")
@click.option("--full", is_flag=True, default=None,
              help="Evaluate every account a rule could fire on, not only those due (automatic after a rules change).")
def scan_command(now_text: str | None, full: bool | None) -> None:
    """Open, update, auto-resolve and suppress stalls once, then print what changed.

    With SLACK_BOT_TOKEN set, the changes are routed as the scheduler's scans are (pings,
    edits, escalations of unacknowledged P0s) and sent before it exits, so an external cron
    running `stallwatch scan` (with `serve --no-scheduler`) pings too."""
    from bot.scan import scan

    now = _parse_now(now_text)
    settings = _settings()
    engine, rules = _engine(settings), _rules(settings)
    if not settings.slack_enabled:
        click.echo(scan(engine, rules, now, full=full or None).summary())
        click.echo("slack: SLACK_BOT_TOKEN is not set, no pings routed")
        return
    click.echo(_scan_and_ping(engine, settings, rules, now, full=full or None))


SCAN_SEND_SECONDS = 30  # how long `stallwatch scan` waits for Slack before leaving the rest to a server


def _scan_and_ping(engine, settings, rules, now, *, full) -> str:
    """One scan with the Slack router as its change hook (as `_start_slack` does for the scheduler),
    the P0 escalations the leader's job would make, then the outbox rows this made, sent."""
    from bot.scan import scan
    from bot.slack.client import web_client
    from bot.slack.outbox import OutboxSender, drain, last_row_id
    from bot.slack.router import Router

    before = last_row_id(engine)
    router = Router(engine, settings, rules)
    report = scan(engine, rules, now, full=full, hooks=[router.handle])
    escalated = router.escalate_due(now)
    sender = OutboxSender(engine, lambda: web_client(settings, blocking_retries=False), rules=rules)
    counts = drain(sender, before, timeout=SCAN_SEND_SECONDS)
    why = "the Slack token is revoked: see /healthz" if sender.paused() else \
        "quiet hours or retries: a running serve or worker, or the next scan, sends them"
    waiting = f", {counts['waiting']} waiting ({why})" if counts["waiting"] else ""
    return (f"{report.summary()}\nslack: {counts['sent'] + counts['failed'] + counts['waiting']} message(s) "
            f"enqueued ({escalated} escalation(s)): {counts['sent']} sent, {counts['failed']} failed{waiting}")


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
    for line in track_lines(loaded):
        click.echo(f"  {line}")


def track_lines(rules) -> list[str]:
    """How each track is routed and tuned, in words (`rules check`, `backtest`)."""
    from rules.tracks import describe_tracks

    return describe_tracks(rules)


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
        engine, rules = _engine(settings), _rules(settings)
        created, updated = import_accounts_csv(engine, rules, text, source=str(file))
    except CsvError as exc:
        click.echo("\n".join(exc.problems), err=True)
        raise click.ClickException(f"{file}: nothing imported ({len(exc.problems)} problem(s) above)") from None
    click.echo(f"{file}: {created} account(s) created, {updated} updated")
    if settings.slack_enabled:
        # New and changed owners mapped to Slack users now, and open pings moved to them (a
        # running server sends those), rather than at the next ping or the daily run.
        from bot.slack.owners import OwnerResolver

        click.echo(OwnerResolver(engine, settings, rules).resolve_pending().summary())


# --- CRM sync (bot/crm) -------------------------------------------------------------------
@main.group("sync")
def sync_group() -> None:
    """Pull account facts (ARR, owner, renewal date) from a CRM."""


@sync_group.command("hubspot")
def sync_hubspot_command() -> None:
    """Pull the companies changed in HubSpot since the last sync (HUBSPOT_TOKEN; [hubspot] in the rules)."""
    from bot.crm.hubspot import HubSpotClient, HubSpotError
    from bot.crm.sync import sync_hubspot

    settings = _settings()
    if not settings.hubspot_token:
        raise click.ClickException("HUBSPOT_TOKEN is not set: create a HubSpot private app (scopes "
                                   "crm.objects.companies.read, crm.objects.owners.read) and set its token")
    engine, rules = _engine(settings), _rules(settings)
    try:
        with HubSpotClient.from_settings(settings) as client:
            report = sync_hubspot(engine, rules, client)
            notes = None
            if rules.hubspot.notes:  # [hubspot] notes: the notes due go out too (bot/crm/notes.py)
                from bot.crm.notes import run_notes

                notes = run_notes(engine, rules, client)
    except HubSpotError as exc:
        raise click.ClickException(f"hubspot: {exc} (what was synced before it is kept; the next sync "
                                   "goes on from there)") from None
    for problem in report.problems:
        click.echo(problem, err=True)
    if report.problem_count > len(report.problems):
        click.echo(f"... and {report.problem_count - len(report.problems)} more (in the log)", err=True)
    click.echo(report.summary())
    if notes is not None:
        click.echo(notes.summary())
    if report.owners_changed and settings.slack_enabled:
        # As import-accounts: the new owners mapped to Slack users and open pings moved now.
        from bot.slack.owners import OwnerResolver

        click.echo(OwnerResolver(engine, settings, rules).resolve_pending().summary())


# --- daily digest (bot/slack/digest.py) ---------------------------------------------------
@main.command("digest")
@click.option("--dry-run", is_flag=True, help="Print the digest; store and post nothing.")
@click.option("--now", "now_text", default=None, metavar="ISO", help="Build as of this time (default: now).")
@click.option("--morning", is_flag=True, help="Send today's per-CSM morning DMs instead (once per CSM and day).")
def digest_command(dry_run: bool, now_text: str | None, morning: bool) -> None:
    """Post today's digest to STALLWATCH_DIGEST_CHANNEL (once per day and channel), or with
    --morning DM each CSM their own queue (once per CSM and day)."""
    from bot.slack.digest import post_digest

    now = _parse_now(now_text)
    settings = _settings()
    if morning:
        _morning_command(settings, now, dry_run)
        return
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


def _morning_command(settings, now, dry_run: bool) -> None:
    """`digest --morning`: run by hand, so it runs even while `[digest] morning_dm` is off."""
    from bot.slack.morning import send_morning

    outcome = send_morning(_engine(settings), _rules(settings), now, dry_run=dry_run, force=True)
    if dry_run:
        click.echo(outcome.text, nl=False)
        return
    note = "" if settings.slack_enabled or not outcome.sent else \
        " (SLACK_BOT_TOKEN is not set: a running `serve` or `worker` with it sends them)"
    click.echo(outcome.summary() + note)
# --- end daily digest ---------------------------------------------------------------------


# --- exports (bot/export.py) --------------------------------------------------------------
EXPORT_PROGRESS_ROWS = 50_000  # a progress line on stderr each time this many more rows are written (~0.7 s)


def _parse_since(_ctx, _param, value: str | None) -> datetime | None:
    from bot.export import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM] "
            "(UTC unless an offset is given), e.g. 2026-11-01 or 2026-11-01T09:00:00Z") from None


@contextmanager
def _export_stream(out: Path | None):
    """A UTF-8 text stream with newline="" (the csv module writes its own CRLF) to `out`, or to
    stdout. A file is written as FILE.partial and renamed once complete: a loader watching for
    FILE never reads half an export."""
    import io
    import os

    if out is None:
        sys.stdout.flush()
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            yield stream
            stream.flush()
        finally:
            try:
                stream.detach()  # leave stdout open for click
            except (OSError, ValueError):
                pass  # the reader went away (`| head`): nothing left to flush to
        return
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as stream:
            yield stream
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


@main.command("export")
@click.argument("what", type=click.Choice(list(EXPORTERS)))
@click.option("--since", callback=_parse_since, metavar="DATE",
              help="Only rows changed at or after DATE (ISO date or time, UTC): "
                   + "; ".join(f"{e.name}: {e.since_means}" for e in EXPORTERS.values()) + ".")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="File to write [default: stdout].")
def export_command(what: str, since: datetime | None, fmt: str, out: Path | None) -> None:
    """Write every account, stall, audit entry or note as CSV or JSON Lines (a QBR deck, a warehouse).

    \b
    accounts: id, name, domain, plan, track, lifecycle status, ARR, owner,
              renewal date, stage, signup/activation times, open stalls
              and their top priority
    stalls:   id, account, rule, step, status, priority, score, opened/
              threshold/resolved times, resolution, resolved by, assignee,
              snoozed until, recovery emails sent
    audit:    time, actor, action, stall, account, source, detail (JSON)
    notes:    time, account, stall, author, text

    Times are ISO 8601 UTC. CSV cells that a spreadsheet would run as a formula (starting with
    = + - @, a tab or CR) are prefixed with a quote; JSON Lines carries the values as they are.
    Rows are streamed: memory stays flat whatever the size.
    """
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from bot.export import counted, write
    from storage.db import read_tx

    exporter = EXPORTERS[what]
    engine = _engine(_settings(), migrate=False)  # read-only: an export never changes the schema
    started = time.perf_counter()
    shown = [0]

    def progress(rows: int) -> None:
        if rows // EXPORT_PROGRESS_ROWS > shown[0]:
            shown[0] = rows // EXPORT_PROGRESS_ROWS
            click.echo(f"… {counted(exporter, rows)} written ({time.perf_counter() - started:.1f} s)", err=True)

    try:
        with _export_stream(out) as stream, read_tx(engine) as conn:
            count = write(conn, exporter, stream, fmt=fmt, since=since, progress=progress)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise click.ClickException(f"cannot read the {what} from the database: {reason} "
                                   "(is DATABASE_URL right and the schema current? `stallwatch db upgrade`)") from None
    except BrokenPipeError:
        sys.exit(1)  # `stallwatch export stalls | head`: the reader stopped reading
    except OSError as exc:
        raise click.ClickException(f"cannot write {out or 'stdout'}: {exc}") from None
    finally:
        engine.dispose()
    click.echo(f"{counted(exporter, count)} written to {out or 'stdout'} in {time.perf_counter() - started:.1f} s",
               err=True)
# --- end exports --------------------------------------------------------------------------


# --- daily snapshots (bot/snapshots.py) ----------------------------------------------------
@main.command("snapshot")
@click.option("--now", "now_text", default=None, metavar="ISO", help="Snapshot as of this time (default: now).")
def snapshot_command(now_text: str | None) -> None:
    """Write today's health and company snapshot (the worker does it daily; a re-run the same
    day replaces it)."""
    from bot.snapshots import take_snapshot
    from storage.db import utcnow

    settings = _settings()
    report = take_snapshot(_engine(settings), _rules(settings), _parse_now(now_text) or utcnow())
    alerts = ", ".join(f"{p} {n}" for p, n in report.figures.open_alerts.items())
    click.echo(f"snapshot for {report.day}: {report.accounts} account health rows, {report.pruned} old rows "
               f"dropped; open alerts {alerts}")
# --- end daily snapshots ---------------------------------------------------------------------


# --- demo and backtest (bot/demo/, bot/backtest/) ------------------------------------------
def _quiet_logs() -> None:
    """The demo and the backtest print their own story; INFO logs would bury it (-v keeps them)."""
    root = logging.getLogger()
    if root.level > logging.DEBUG:
        root.setLevel(logging.WARNING)


def _status(text: str) -> None:
    if sys.stderr.isatty():
        click.echo(click.style(f"… {text}", dim=True), err=True)


@main.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("stallwatch-demo"),
              show_default=True, help="Folder for every message's Block Kit JSON, the history and the demo database.")
@click.option("--export", "export_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only write the company's history (JSON Lines, for `stallwatch backtest`) to this file.")
@click.option("--seed", type=int, default=7, show_default=True, help="The same seed gives the same company.")
@click.option("--shape", type=click.Choice(["saas", "enterprise"]),  # bot/demo/company.py SHAPES (imported lazily)
              default="saas", show_default=True,
              help="The kind of company: saas (many small accounts) or enterprise (fewer, bigger accounts, "
                   "longer onboarding, more tickets, fewer CSMs owning more accounts each).")
@click.option("--accounts", type=click.IntRange(10, 5000), default=None,
              help="Number of accounts [default: 300 for saas, 150 for enterprise].")
@click.option("--days", type=click.IntRange(3, 365), default=45, show_default=True, help="Days of history.")
@click.option("--pings", "pings_shown", type=click.IntRange(0), default=10, show_default=True,
              help="Real-time pings printed (the folder has every one).")
@click.option("--no-slack", is_flag=True, help="Do not post to Slack, even with SLACK_BOT_TOKEN set.")
def demo_command(out: Path, export_path: Path | None, seed: int, shape: str, accounts: int | None, days: int,
                 pings_shown: int, no_slack: bool) -> None:
    """Watch Stallwatch work on a synthetic company, no credentials needed.

    Generates a B2B company (accounts, product events, Stripe billing, helpdesk tickets) of
    many small SaaS customers or, with --shape enterprise, fewer and bigger ones, sends its history through the real ingest routes, scans, routes and builds the digest
    with the packaged default rules, and shows each real-time ping and the digest as Slack
    would. With SLACK_BOT_TOKEN, STALLWATCH_ALERTS_CHANNEL and STALLWATCH_DIGEST_CHANNEL set,
    it posts them for real. Its database is a fresh SQLite file in the output folder, never
    DATABASE_URL.
    """
    from bot.demo.pipeline import DemoError, export_history, run_demo
    from bot.demo.show import show

    _quiet_logs()
    now = datetime.now(timezone.utc)
    if export_path is not None:
        company = export_history(export_path, seed=seed, accounts=accounts, days=days, real_now=now, shape=shape)
        click.echo(f"{export_path}: {len(company.records):,} records, {len(company.accounts)} accounts, "
                   f"{company.start:%Y-%m-%d %H:%M} → {company.end:%Y-%m-%d %H:%M} UTC (seed {seed}, {shape}); "
                   f"replay it with: stallwatch backtest {export_path}")
        return
    base = _settings()
    token = None if no_slack else base.slack_bot_token
    if token and not (base.alerts_channel and base.digest_channel):
        raise click.ClickException(
            "SLACK_BOT_TOKEN is set, so the demo posts to Slack: set STALLWATCH_ALERTS_CHANNEL and "
            "STALLWATCH_DIGEST_CHANNEL to channel ids the bot is a member of, or run `stallwatch demo --no-slack`")
    try:
        result = run_demo(out=out, seed=seed, accounts=accounts, days=days, shape=shape, slack_token=token,
                          slack_api_url=base.slack_api_url,
                          alerts_channel=base.alerts_channel if token else None,
                          digest_channel=base.digest_channel if token else None,
                          ops_channel=base.ops_channel_setting if token else None, real_now=now, status=_status)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    show(result, click.echo, color=True, pings_shown=pings_shown)


@main.command("backtest")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Rules file to replay with [default: STALLWATCH_RULES, else the packaged default].")
@click.option("--against", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A second rules file, replayed too and reported side by side (A: --rules, B: --against).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema stallwatch.backtest/1).")
@click.option("--strict", is_flag=True, help="Stop at the first unusable record (exit 1) instead of skipping it.")
def backtest_command(events: Path, rules_file: Path | None, against: Path | None, as_json: bool, strict: bool) -> None:
    """Replay EVENTS.jsonl with a simulated clock and report, per day, what the rules would have done.

    EVENTS.jsonl holds one record per line in the ingest routes' formats:
    {"source": "segment", "message": {...}}, {"source": "stripe", "event": {...}} or
    {"source": "tickets", "ticket": {...}} (`stallwatch demo --export FILE` writes one).
    """
    import orjson

    from bot.backtest.history import HistoryError, read_history
    from bot.backtest.replay import SpanError, replay_all
    from bot.backtest.report import as_json as report_json
    from bot.backtest.report import render_text
    from bot.settings import load_rules

    _quiet_logs()
    rule_sets = []
    for path in ([rules_file] if rules_file else [None]) + ([against] if against else []):
        if path is None:
            settings = _settings()
            rule_sets.append((_rules(settings), settings.rules_path, Path(settings.rules_path).name
                              if settings.rules_path else "default rules"))
            continue
        try:
            rule_sets.append((load_rules(path), str(path), path.name))
        except RulesError as exc:
            click.echo(str(exc), err=True)
            raise click.ClickException(f"{path}: {len(exc.problems)} problem(s) in the rules file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"cannot read {path}: {exc}") from None
    labels = [label for _, _, label in rule_sets]
    if len(labels) == 2 and labels[0] == labels[1]:
        labels = [rule_sets[0][1] or labels[0], rule_sets[1][1] or labels[1]]

    tty = sys.stderr.isatty()
    try:
        with click.progressbar(length=events.stat().st_size, label=f"reading {events.name}", file=sys.stderr,
                               hidden=not tty) as bar:
            history = read_history(events, strict=strict, progress=bar.update)
    except HistoryError as exc:
        click.echo(str(exc), err=True)
        click.echo("stopped at the first unusable record (--strict); without --strict such lines are skipped",
                   err=True)
        sys.exit(1)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {events}: {exc}") from None
    for problem in history.problems[:20]:
        click.echo(f"{problem} (skipped)", err=True)
    if len(history.problems) > 20:
        click.echo(f"… and {len(history.problems) - 20} more unusable line(s), skipped", err=True)

    try:
        total = len(history.entries) * len(rule_sets)
        with click.progressbar(length=total, file=sys.stderr, hidden=not tty, show_eta=True,
                               update_min_steps=max(1, total // 400),
                               label=f"replaying with {' and '.join(labels)}") as bar:
            runs = replay_all(history, [(r, label) for (r, _, _), label in zip(rule_sets, labels)],
                              progress=bar.update)
    except SpanError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        doc = report_json(history, runs, labels, [path for _, path, _ in rule_sets])
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_text(history, runs, labels, rule_sets[0][0].routing.scan_interval_minutes,
                               tracks=[track_lines(r) for r, _, _ in rule_sets]), nl=False)
# --- end demo and backtest -----------------------------------------------------------------


if __name__ == "__main__":
    main()
