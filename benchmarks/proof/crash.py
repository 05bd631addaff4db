"""kill -9 of the server during sustained ingest and Slack delivery (issue 6, item 3).

One `stallwatch serve` (scheduler and outbox sender on) takes a steady stream: product usage
in 100-event batches and, every second or so, a ticket spike on a new $60K account (a P0
stall opened at once, pinged to its owner's DM and to the alerts channel). The fake Slack
answers slowly (`slack_latency` per call), so the outbox always has a post in flight. The
server is killed with SIGKILL several times, preferably while a row is being sent, and
restarted on the same port a second later; the clients send every request again until it
gets a 2xx, as Segment, Stripe and helpdesks do. Afterwards:

- every event of every request that got a 2xx is in the database (a 2xx means durably stored);
- every outbox row is sent, and Slack holds exactly one message per key: a post that reached
  Slack while its sender died is found by its metadata, not posted again;
- (SQLite) the database passes `PRAGMA integrity_check`.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proof import checks
from benchmarks.proof.harness import (Result, ALERTS, Database, Lane, Loader, Stack, free_port, percentile, rules_text,
                                      send_all, wait_until)
from benchmarks.proof.workload import SteadyStream, csm_email, csm_user


@dataclass
class Params:
    kills: int = 5
    first_kill_after: tuple[float, float] = (4.0, 8.0)  # seconds of load before each kill
    downtime: float = 1.0
    tail_seconds: float = 5.0
    usage_batches_per_second: float = 5.0  # 100 events each
    spikes_per_second: float = 1.0
    slack_latency: float = 0.3
    accounts: int = 5_000
    csms: int = 10
    drain_timeout: float = 420.0


SHORT = Params(kills=2, first_kill_after=(3.0, 5.0), tail_seconds=3.0, accounts=1_000)
FULL = Params()


def _leadership_regained(proc) -> list[float]:
    """Seconds from each restart to the process leading the scheduler again (from its log)."""
    from benchmarks.proof.harness import log_time

    out, started = [], None
    for line in proc.log_text().splitlines():
        if line.startswith("===== start #") and not line.startswith("===== start #1 "):
            started = float(line.split(" at ")[1].split()[0])
        elif started is not None and "now the leader" in line:
            at = log_time(line)
            if at is not None:
                out.append(round(at - started, 1))
            started = None
    return out


def run(backend: str, pg_url: str | None, workdir: Path, params: Params = SHORT, log=print,
        seed: int = 3) -> Result:
    result = Result()
    fig = result.figures
    rnd = random.Random(seed)
    db = Database.create(backend, Path(workdir), pg_url)
    fig["database"] = backend
    with Stack(workdir, db, rules=rules_text(scan_minutes=0.1)) as stack:
        stack.fake.latency = params.slack_latency
        for k in range(params.csms):
            stack.fake.add_user(csm_user(k), csm_email(k))
        srv = stack.serve("serve", port=free_port()).start()
        stream = SteadyStream(f"crash{int(time.time())}", accounts=params.accounts, csms=params.csms, seed=seed)
        setup = send_all([srv.url], stream.account_setup(), concurrency=4)
        result.check(all(o.ok for o in setup.outcomes), "account setup failed")
        spikes: list[str] = []

        def spike(_: int):
            account, unit = stream.spike_account()
            spikes.append(account)
            return unit

        loader = Loader(srv.url, [Lane("usage", lambda i: [stream.usage(i)], params.usage_batches_per_second),
                                  Lane("spikes", spike, params.spikes_per_second)], retry=True).start()
        kills = []
        for k in range(params.kills):
            time.sleep(rnd.uniform(*params.first_kill_after))
            # Prefer a moment when a post is in flight (the fake answers slowly, so one usually is).
            try:
                wait_until(lambda: (db.scalar("SELECT count(*) FROM slack_outbox WHERE status = 'sending'") or 0) > 0,
                           3.0, interval=0.02)
            except TimeoutError:
                pass
            t_kill = srv.kill9()
            in_flight = [r.key for r in db.rows("SELECT key FROM slack_outbox WHERE status = 'sending'")]
            at_slack = {k: checks.slack_tally(stack.fake).messages[k] for k in in_flight}
            time.sleep(params.downtime)
            srv.start()
            back = time.time() - t_kill
            kills.append({"at": round(t_kill - loader.report.started, 1), "in_flight": in_flight,
                          "already_at_slack": at_slack, "back_after_s": round(back, 1)})
            log(f"  kill {k + 1}: {len(in_flight)} post(s) in flight {in_flight}, "
                f"{sum(at_slack.values())} already at Slack; serving again after {back:.1f} s")
        time.sleep(params.tail_seconds)
        report = loader.stop()
        t_load_end = time.time()
        fig["kills"] = kills
        fig["load_seconds"] = round(report.finished - report.started, 1)
        acked = report.acked_ids()
        tries = len(report.outcomes)
        no_answer = sum(1 for o in report.outcomes if o.status is None)
        refused = [o for o in report.outcomes if o.status is not None and not o.ok]
        fig["requests"] = tries
        fig["requests_without_answer_during_kills"] = no_answer
        fig["requests_refused"] = len(refused)
        result.check(not refused, f"non-2xx answers: {[(o.status, o.body) for o in refused[:3]]}")
        unacked = [d for d in {id(o.delivery): o.delivery for o in report.outcomes}.values()
                   if not any(i in acked for i in d.ids)]
        result.check(not unacked, f"{len(unacked)} requests never got a 2xx")
        stored = checks.stored_ids(db)
        missing = acked - stored
        fig["events_acknowledged"] = len(acked)
        fig["acknowledged_but_missing"] = len(missing)
        result.check(not missing, f"{len(missing)} acknowledged events are not in the database, e.g. {sorted(missing)[:3]}")
        n, d = checks.event_counts(db)
        result.check(n == d, f"event table: {n} rows but {d} distinct")

        # Slack: the outbox resumes and sends nothing twice
        try:
            wait_until(lambda: checks.outbox_drained(db) and not checks.unrouted_stalls(db), params.drain_timeout,
                       interval=0.5, what="every stall routed and the outbox drained after the last restart")
            fig["outbox_drained_after_load_s"] = round(time.time() - t_load_end, 1)
        except TimeoutError as exc:
            result.problems.append(f"{exc}: {dict(checks.outbox_state(db).by_status)}")
        state = checks.outbox_state(db)
        tally = checks.slack_tally(stack.fake)
        fig["outbox"] = dict(state.by_status)
        fig["spike_accounts"] = len(spikes)
        lost = checks.unrouted_stalls(db)
        pings = checks.routed_pings(db, ALERTS)
        fig["pings_expected"] = len(pings)
        fig["stalls_never_routed"] = [s.id for s in lost]
        result.check(not lost, f"{len(lost)} P0/P1 stall(s) were never pinged: {[s.id for s in lost]}")
        # A stall committed just before a kill, whose pings the dying process never enqueued,
        # is routed by the leader's safety net (Router.route_unrouted) after the restart.
        fig["stalls_routed_by_the_safety_net"] = sum(
            int(m.group(1)) for m in re.finditer(r"router: (\d+) stall\(s\) were never routed", srv.log_text()))
        fig["leader_again_after_restart_s"] = _leadership_regained(srv)
        fig["pings_cancelled_because_the_stall_closed_first"] = len(state.cancelled)
        result.check(not state.undelivered, f"outbox not all sent: {dict(state.by_status)}; failed {state.failed[:3]}")
        not_once = [k for k in pings if tally.messages[k] != 1]
        result.check(not not_once, f"{len(not_once)} pings not at Slack exactly once: "
                                   f"{[(k, tally.messages[k]) for k in not_once[:5]]}")
        doubled = tally.doubled()
        fig["slack_keys_posted_twice"] = len(doubled)
        result.check(not doubled, f"posted twice: {list(doubled.items())[:5]}")
        opened = {r.account_id for r in db.rows("SELECT account_id FROM stall WHERE rule = 'ticket_spike'")}
        fig["spike_stalls_opened"] = len(opened)
        result.check(set(spikes) <= opened, f"{len(set(spikes) - opened)} spikes without a stall")
        recovered = sum(line.count("had reached Slack") for line in srv.log_text().splitlines())
        fig["posts_found_in_history_after_a_crash"] = recovered
        lat = [o.latency * 1000 for o in report.outcomes if o.ok]
        fig["latency_p50_ms"] = round(percentile(lat, 0.5), 1)
        if backend == "sqlite":
            ok = db.scalar("PRAGMA integrity_check")
            fig["sqlite_integrity_check"] = ok
            result.check(ok == "ok", f"integrity_check: {ok}")
        errors = [line for line in srv.log_text().splitlines() if " ERROR " in line]
        fig["error_log_lines"] = len(errors)
        result.check(not errors, f"errors in the log: {errors[:3]}")
    return result
