"""kill -9 of the server while it sends approved recovery emails (issue 6, item 3, the mail
outbox: bot/mail/outbox.py).

One `stallwatch serve` with SMTP_URL pointing at a loopback SMTP server (aiosmtpd) that takes
`smtp_delay` seconds to answer each message. `emails` stalls are opened through ingest (ticket
spikes), and for each one an approved recovery email is put in the mail outbox the way the
approval does (a Draft row and `enqueue_mail`, one transaction). The server's mail sender
starts on them at once; the server is killed with SIGKILL `kills` times, each time while an
email is in flight ('sending' or 'transmitting'), and restarted.

The SMTP server counts a message as delivered as soon as it has the whole message (before it
answers): the pessimistic reading of "the sender died after the final dot". Then:

- no email is delivered twice;
- every row the sender marked 'sent' was delivered exactly once, and everything not in flight
  at a kill is sent (the outbox resumes after a restart);
- a row a killed sender left 'transmitting' (the final "." may have reached the server) is
  never sent again: once its 5-minute lease runs out it becomes 'unknown' and the draft is
  blocked with "may or may not have been sent"; a row left 'sending' (nothing reached the
  server) is sent again, once. The short run does not wait out the lease: it checks that
  those rows are still held (claimed by a process that no longer exists), not re-sent.
"""

from __future__ import annotations

import asyncio
import email
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proof import checks
from benchmarks.proof.harness import Database, Result, Stack, free_port, rules_text, send_all, wait_until
from benchmarks.proof.workload import SteadyStream, csm_email, csm_user


@dataclass
class Params:
    emails: int = 120
    kills: int = 3
    smtp_delay: float = 0.4
    wait_out_lease: bool = True
    lease_timeout: float = 480.0


SHORT = Params(emails=24, kills=2, wait_out_lease=False)
FULL = Params()


class SmtpRecorder:
    """A loopback SMTP server recording every message it received in full, by Message-ID."""

    def __init__(self, delay: float):
        self.delay = delay
        self.received: list[tuple[float, str]] = []
        self.controller = None
        self.port = free_port()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook
        message = email.message_from_bytes(envelope.content)
        self.received.append((time.time(), str(message["Message-ID"])))
        await asyncio.sleep(self.delay)  # the window in which the sender may die
        return "250 2.0.0 queued"

    def __enter__(self) -> "SmtpRecorder":
        from aiosmtpd.controller import Controller

        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def counts(self) -> Counter:
        return Counter(mid for _, mid in self.received)


def approve(db: Database, stall_id: int, account_id: str, n: int) -> None:
    """What bot.stalls.drafts.approve leaves behind: an approved Draft and its outbox row, together."""
    from sqlalchemy import select

    from bot.mail.outbox import enqueue_mail
    from storage.db import utcnow, write_tx
    from storage.models import Draft, Stall

    draft_t, stall_t = Draft.__table__, Stall.__table__
    now = utcnow()
    with write_tx(db.engine) as conn:
        stall = conn.execute(select(stall_t.c.rule, stall_t.c.step).where(stall_t.c.id == stall_id)).one()
        recipient = f"buyer{n}@customer{n}.test"
        subject, body = f"Getting {account_id} unstuck", f"Hello,\n\nrecovery email {n}.\n"
        draft_id = conn.execute(draft_t.insert().values(
            stall_id=stall_id, account_id=account_id, recipient=recipient, subject=subject, body=body,
            generated_subject=subject, generated_body=body, source="template", status="approved",
            created_by="U0CSM0000", approved_by="U0CSM0000", approved_at=now, created_at=now, updated_at=now,
            rule=stall.rule, step=stall.step, attempt=1).returning(draft_t.c.id)).scalar_one()
        enqueue_mail(conn, draft_id=draft_id, recipient=recipient, subject=subject, body=body, now=now,
                     mail_from="cs@vendor.test")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def run(backend: str, pg_url: str | None, workdir: Path, params: Params = SHORT, log=print) -> Result:
    result = Result()
    fig = result.figures
    db = Database.create(backend, Path(workdir), pg_url)
    fig["database"] = backend
    with SmtpRecorder(params.smtp_delay) as smtp, Stack(
            workdir, db, rules=rules_text(scan_minutes=0.5),
            extra_env={"SMTP_URL": f"smtp://127.0.0.1:{smtp.port}?starttls=off",
                       "STALLWATCH_MAIL_FROM": "Customer Success <cs@vendor.test>"}) as stack:
        stack.fake.add_user(csm_user(0), csm_email(0))
        srv = stack.serve("serve").start()
        stream = SteadyStream(f"mail{int(time.time())}", accounts=1, csms=1)
        accounts = []
        units = []
        for _ in range(params.emails):
            account, unit = stream.spike_account()
            accounts.append(account)
            units.extend(unit)
        sent = send_all([srv.url], units, concurrency=1)
        result.check(all(o.ok for o in sent.outcomes), "ingest of the spikes failed")
        wait_until(lambda: db.scalar("SELECT count(*) FROM stall WHERE rule = 'ticket_spike'") >= params.emails, 60,
                   what="stalls opened")
        stalls = db.rows("SELECT id, account_id FROM stall WHERE rule = 'ticket_spike' ORDER BY id")
        for n, s in enumerate(stalls):
            approve(db, s.id, s.account_id, n)
        log(f"  {len(stalls)} approved recovery emails queued; SMTP answers after {params.smtp_delay} s each")
        kills = []
        for k in range(params.kills):
            time.sleep(params.smtp_delay * 3)
            try:
                wait_until(lambda: (db.scalar("SELECT count(*) FROM mail_outbox WHERE status IN "
                                              "('sending', 'transmitting')") or 0) > 0, 20, interval=0.01)
            except TimeoutError:
                log("  nothing in flight to kill during")
            srv.kill9()
            dead_pid = srv.pid
            in_flight = [(r.draft_id, r.status) for r in db.rows(
                "SELECT draft_id, status FROM mail_outbox WHERE status IN ('sending', 'transmitting')")]
            kills.append({"in_flight": in_flight, "pid": dead_pid})
            log(f"  kill {k + 1}: in flight {in_flight}")
            time.sleep(0.5)
            srv.start()
        fig["kills"] = kills
        held = {d for kill in kills for d, _ in kill["in_flight"]}

        def settled() -> bool:
            statuses = {r.status for r in db.rows("SELECT status FROM mail_outbox")}
            if params.wait_out_lease:
                return not statuses & {"pending", "sending", "transmitting"}
            return "pending" not in statuses

        started = time.time()
        try:
            wait_until(settled, params.lease_timeout if params.wait_out_lease else 90, interval=0.5,
                       what="mail outbox settled")
            fig["settled_after_s"] = round(time.time() - started, 1)
        except TimeoutError as exc:
            result.problems.append(str(exc))
        time.sleep(params.smtp_delay + 0.5)  # a delivery in progress lands at the server
        rows = db.rows("SELECT draft_id, status, message_id, claimed_by FROM mail_outbox")
        delivered = smtp.counts()
        by_status = Counter(r.status for r in rows)
        fig["emails"] = len(rows)
        fig["outbox"] = dict(by_status)
        fig["delivered_messages"] = sum(delivered.values())
        twice = {m: n for m, n in delivered.items() if n > 1}
        fig["delivered_twice"] = len(twice)
        result.check(not twice, f"emails delivered more than once: {twice}")
        for r in rows:
            n = delivered[r.message_id]
            if r.status == "sent":
                result.check(n == 1, f"draft {r.draft_id} is 'sent' but was delivered {n} times")
            elif r.status == "unknown":
                result.check(n <= 1 and r.draft_id in held, f"draft {r.draft_id} is 'unknown' ({n} deliveries)")
            elif r.status in ("sending", "transmitting") and not params.wait_out_lease:
                pid = int((r.claimed_by or "x:0:x").split(":")[1].split("@")[0])
                result.check(r.draft_id in held and not _pid_alive(pid) and n <= 1,
                             f"draft {r.draft_id} is {r.status} (claimed by {r.claimed_by}), delivered {n} times")
            else:
                result.problems.append(f"draft {r.draft_id} ended {r.status}")
        fig["held_by_a_killed_sender"] = sorted(held)
        unknown = [r.draft_id for r in rows if r.status == "unknown"]
        if unknown:
            blocked = db.rows("SELECT id, status, blocked_reason FROM draft WHERE id IN "
                              f"({','.join(str(d) for d in unknown)})")
            result.check(all(b.status == "blocked" and "may or may not" in (b.blocked_reason or "") for b in blocked),
                         f"drafts of 'unknown' emails: {blocked}")
        fig["sent_exactly_once"] = sum(1 for r in rows if r.status == "sent" and delivered[r.message_id] == 1)
        errors = [line for line in srv.log_text().splitlines()
                  if " ERROR " in line and "mail outbox: draft" not in line]  # 'unknown' is logged as an ERROR
        fig["error_log_lines"] = len(errors)
        result.check(not errors, f"errors in the log: {errors[:3]}")
        state = checks.outbox_state(db)
        result.check(not checks.slack_tally(stack.fake).doubled(), "a Slack message was posted twice")
        fig["slack_outbox"] = dict(state.by_status)
    return result
