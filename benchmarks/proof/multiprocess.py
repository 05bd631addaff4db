"""Several processes on one PostgreSQL database (issue 6, item 2).

Two `stallwatch serve` (both with the scheduler on, so they contend for leadership) and one
`stallwatch worker`, started together on an empty schema (they race on the migrations too),
Slack pointed at the fake. The stream (`workload.book`) goes to both servers from concurrent
clients, with 20% redeliveries: whole requests repeated at once to the other server, and
single messages re-sent later through the other Segment route. Then:

- every event is stored once, and the servers' answers account for each exactly once
  (sum of "accepted" == distinct events);
- every expected stall is opened once (one row per account, rule and step);
- every real-time ping is posted once (Slack holds one message per outbox key; one
  successful chat.postMessage per key), though three outbox senders compete for the rows;
- the digest is posted once: three `stallwatch digest` processes race (and in the full run
  the leader's own daily job fires first);
- exactly one scheduler leader at any time (pg_locks polled every 100 ms, and each
  process's own log of its leadership); kill -9 of the leader (twice in the full run, so that a
  server leads and dies too): a standby takes over (the
  time is measured), the killed process is restarted and stands by, and a second stream
  shows the new leader scanning and pinging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from benchmarks.proof import checks
from benchmarks.proof.harness import (Result, ALERTS, DIGEST, Database, Sampler, Stack, percentile, rules_text, send_all,
                                      start_all, wait_until, leadership_changes)
from benchmarks.proof.workload import book, csm_email, csm_user

UTC = timezone.utc


@dataclass
class Params:
    events: int = 20_000
    redeliver: float = 0.2
    csms: int = 12
    concurrency: int = 8
    phase2_events: int = 2_000
    leader_kills: int = 2
    digest_cron: bool = True  # wait for the leader's daily job (at the next whole minute after ~90 s)
    settle_timeout: float = 240.0


SHORT = Params(events=3_000, phase2_events=600, leader_kills=1, digest_cron=False, settle_timeout=120.0)
FULL = Params()


def _lock_holders(db: Database, key: int):
    classid, objid = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF

    def probe() -> tuple[str, ...]:
        rows = db.rows(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = CAST(:c AS oid) "
            "AND l.objid = CAST(:o AS oid) AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            c=classid, o=objid)
        return tuple(sorted(r.application_name for r in rows))

    return probe


def _intervals(proc, end: float) -> list[tuple[float, float]]:
    """The periods a process says (in its log) it was the leader; a kill ends one."""
    out, since = [], None
    kills = sorted(proc.killed_at)
    events = sorted([(t, "lead" if lead else "stand") for t, lead in leadership_changes(proc)] +
                    [(t, "kill") for t in kills])
    for t, what in events:
        if what == "lead" and since is None:
            since = t
        elif what in ("stand", "kill") and since is not None:
            out.append((since, t))
            since = None
    if since is not None:
        out.append((since, end))
    return out


def _send_phase(stack: Stack, servers, workload, params: Params, result: Result, label: str):
    urls = [p.url for p in servers]
    setup = send_all(urls, workload.setup, concurrency=params.concurrency)
    stream = send_all(urls, workload.stream, concurrency=params.concurrency)
    outcomes = setup.outcomes + stream.outcomes
    bad = [o for o in outcomes if not o.ok]
    result.check(not bad, f"{label}: {len(bad)} deliveries without a 2xx, e.g. "
                          f"{[(o.status, o.error, (o.body or {}).get('error')) for o in bad[:3]]}")
    accepted = sum((o.body or {}).get("accepted", 0) for o in outcomes if o.ok)
    duplicates = sum((o.body or {}).get("duplicates", 0) for o in outcomes if o.ok)
    rejected = sum(len((o.body or {}).get("rejected", [])) for o in outcomes if o.ok)
    result.check(rejected == 0, f"{label}: {rejected} events rejected")
    result.check(accepted == len(workload.distinct),
                 f"{label}: the answers accepted {accepted} events, {len(workload.distinct)} are distinct")
    result.check(duplicates == workload.events_sent - len(workload.distinct),
                 f"{label}: the answers counted {duplicates} duplicates, "
                 f"{workload.events_sent - len(workload.distinct)} were sent")
    # Whole-request redeliveries racing their original (both in flight at once, on two servers)
    spans: dict[int, list] = {}
    for o in stream.outcomes:
        spans.setdefault(id(o.delivery.body), []).append((o.sent_at, o.sent_at + o.latency, o.server))
    racing = sum(1 for v in spans.values() if len(v) == 2 and v[0][2] != v[1][2]
                 and v[0][0] < v[1][1] and v[1][0] < v[0][1])
    seconds = stream.finished - stream.started
    lat = [o.latency * 1000 for o in stream.outcomes if o.ok]
    return {"deliveries": len(outcomes), "events_sent": workload.events_sent, "distinct": len(workload.distinct),
            "redelivered": workload.redelivered_events, "accepted": accepted, "duplicates": duplicates,
            "redelivered_requests_in_flight_with_their_original": racing,
            "stream_seconds": round(seconds, 2),
            "stream_events_per_s": round(sum(len(d.ids) for d in workload.stream) / seconds),
            "latency_p50_ms": round(percentile(lat, 0.5), 1), "latency_p99_ms": round(percentile(lat, 0.99), 1)}


def _settle(stack: Stack, db: Database, accounts: dict, params: Params, label: str, result: Result) -> float:
    """Wait until every expected stall is open and every expected ping sent; return the time."""
    expected = {(a.id, rule) for a in accounts.values() for rule in a.expected_rules()}

    def done() -> bool:
        opened = {(r.account_id, r.rule) for r in db.rows("SELECT account_id, rule FROM stall")}
        if not expected <= opened:
            return False
        state = checks.outbox_state(db)
        pings = checks.expected_pings(db, ALERTS)
        return state.settled and all(state.keys.get(k) == "sent" for k in pings)

    started = time.time()
    try:
        wait_until(done, params.settle_timeout, interval=0.5, what=f"{label}: stalls opened and pings sent")
    except TimeoutError as exc:
        opened = {(r.account_id, r.rule) for r in db.rows("SELECT account_id, rule FROM stall")}
        state = checks.outbox_state(db)
        result.problems.append(f"{exc}: {len(expected - opened)} stalls missing (e.g. {sorted(expected - opened)[:3]}), "
                               f"outbox {dict(state.by_status)}")
    return time.time() - started


def run(pg_url: str, workdir: Path, params: Params = SHORT, log=print) -> Result:
    from bot.leader import advisory_key

    result = Result()
    fig = result.figures
    db = Database.postgres(pg_url, prefix="proof_mp")
    schema = db.url.rsplit("%3D", 1)[1]
    digest_time, digest_at = None, None
    if params.digest_cron:
        at = datetime.now(UTC) + timedelta(seconds=90)
        at = (at + timedelta(minutes=1)).replace(second=0, microsecond=0)
        digest_time, digest_at = at.strftime("%H:%M"), at.timestamp()
    rules = rules_text(scan_minutes=0.1, digest_time=digest_time)
    with Stack(workdir, db, rules=rules) as stack:
        for k in range(params.csms):
            stack.fake.add_user(csm_user(k), csm_email(k))
        a, b, w = stack.serve("serve-a"), stack.serve("serve-b"), stack.worker("worker")
        procs = [a, b, w]
        t0 = time.time()
        start_all(procs)
        fig["processes"] = "2 x serve (scheduler on) + 1 x worker"
        fig["start_seconds"] = round(time.time() - t0, 1)
        log(f"  started 2 servers and a worker on schema {schema} in {fig['start_seconds']} s")

        monitor = Sampler(_lock_holders(db, advisory_key(schema)), 0.1)
        monitor.start()
        health = Sampler(lambda: tuple(p.name for p in (a, b) if (p.health(1) or {}).get("scheduler") == "leader"), 0.25)
        health.start()

        run_id = f"{int(time.time())}"
        w1 = book(run_id, params.events, csms=params.csms, seed=1, redeliver=params.redeliver)
        log(f"  phase 1: {len(w1.distinct)} distinct events + {w1.redelivered_events} redelivered, "
            f"{len(w1.deliveries)} requests, {len(w1.accounts)} accounts, to both servers")
        fig["phase1"] = _send_phase(stack, [a, b], w1, params, result, "phase 1")
        log(f"  phase 1 sent: {fig['phase1']}")
        fig["phase1_settle_seconds"] = round(_settle(stack, db, w1.accounts, params, "phase 1", result), 1)
        log(f"  phase 1: stalls open and pings sent {fig['phase1_settle_seconds']} s after the last event")

        # --- the digest: the leader's daily job (full run), then three CLI processes racing
        if digest_at is not None:
            log(f"  waiting for the leader's digest job at {digest_time} UTC")
            try:
                wait_until(lambda: (db.scalar("SELECT count(*) FROM digest_run") or 0) > 0,
                           max(5.0, digest_at - time.time() + 60), interval=0.5, what="the scheduled digest")
                fig["digest_by_leader"] = True
            except TimeoutError as exc:
                result.problems.append(str(exc))
        racers = [stack.cli(f"digest-{i}", "digest") for i in range(3)]
        for r in racers:
            r.start(wait=False)
        for r in racers:
            r.popen.wait(timeout=180)
        queued = sum("queued to" in r.log_text() for r in racers)
        fig["digest_cli_racers_that_posted"] = queued
        result.check(queued == (0 if fig.get("digest_by_leader") else 1),
                     f"digest: {queued} of 3 concurrent `stallwatch digest` runs queued one "
                     f"({[r.log_tail(2) for r in racers]})")
        try:
            wait_until(lambda: checks.outbox_drained(db), 60, what="digest sent")
        except TimeoutError as exc:
            result.problems.append(str(exc))

        # --- leadership: kill -9 the leader (in the full run twice: then a serve leads); a standby takes over
        fig["leader_kills"] = []
        for _ in range(params.leader_kills):
            holders = monitor.samples[-1][1] if monitor.samples else ()
            result.check(len(holders) == 1, f"leader before the kill: {holders}")
            leader = next((p for p in procs if holders and p.name == holders[0]), None)
            if leader is None:
                break
            t_kill = leader.kill9()
            log(f"  killed the leader ({leader.name}, pid {leader.pid}) with SIGKILL")
            try:
                wait_until(lambda: bool(monitor.samples) and monitor.samples[-1][0] > t_kill
                           and monitor.samples[-1][1] not in ((), (leader.name,)), 90, interval=0.05,
                           what="a standby takes the lock")
            except TimeoutError as exc:
                result.problems.append(str(exc))
            took = next((t for t, h in monitor.samples if t > t_kill and h and h != (leader.name,)), None)
            kill = {"killed": leader.name, "takeover_seconds": round(took - t_kill, 2) if took else None,
                    "new_leader": monitor.samples[-1][1][0] if monitor.samples[-1][1] else None}
            fig["leader_kills"].append(kill)
            log(f"  {kill['new_leader']} took over {kill['takeover_seconds']} s after the kill (target < 60 s)")
            result.check(took is not None and took - t_kill < 60, f"takeover took {kill['takeover_seconds']} s")
            leader.start()  # a supervisor restarts it: it must stand by
            time.sleep(4)  # its first election (at start): it finds the lock taken
        fig["takeover_seconds"] = max((k["takeover_seconds"] or 999) for k in fig["leader_kills"]) \
            if fig["leader_kills"] else None
        # --- phase 2: the new leader scans and everyone pings
        w2 = book(run_id + "b", params.phase2_events, csms=params.csms, seed=2, redeliver=params.redeliver,
                  account_prefix="late")
        fig["phase2"] = _send_phase(stack, [a, b], w2, params, result, "phase 2")
        fig["phase2_settle_seconds"] = round(_settle(stack, db, w2.accounts, params, "phase 2", result), 1)
        log(f"  phase 2: {fig['phase2']['distinct']} events, stalls and pings settled in "
            f"{fig['phase2_settle_seconds']} s")
        time.sleep(1.0)
        samples = monitor.stop()
        health_samples = health.stop()
        end = time.time()

        # --- the verdict, from the database and from what Slack holds
        distinct = w1.distinct | w2.distinct
        stored = checks.stored_ids(db)
        n, d = checks.event_counts(db)
        fig["events_stored"] = n
        result.check(n == d == len(distinct), f"event table: {n} rows, {d} distinct, {len(distinct)} sent")
        result.check(stored == distinct, f"{len(distinct - stored)} events missing, {len(stored - distinct)} unexpected")
        opens = checks.stall_opens(db)
        fig["stalls"] = sum(opens.values())
        # A progress event that arrives after the scan opened a step stall on the step before
        # closes that stall (auto_resolved) and opens one on the next step: both counted once.
        fig["stalls_auto_resolved_by_late_events"] = db.scalar("SELECT count(*) FROM stall WHERE status = 'auto_resolved'")
        twice = {k: v for k, v in opens.items() if v > 1}
        result.check(not twice, f"stalls opened more than once: {list(twice.items())[:5]}")
        expected_stalls = {(acc.id, rule) for w in (w1, w2) for acc in w.accounts.values()
                           for rule in acc.expected_rules()}
        result.check({(k[0], k[1]) for k in opens} == expected_stalls,
                     f"stalls: {len(expected_stalls - {(k[0], k[1]) for k in opens})} expected ones missing, "
                     f"{len({(k[0], k[1]) for k in opens} - expected_stalls)} unexpected")
        state = checks.outbox_state(db)
        tally = checks.slack_tally(stack.fake)
        pings = checks.expected_pings(db, ALERTS)
        fig["pings_expected"] = len(pings)
        fig["outbox"] = dict(state.by_status)
        fig["pings_cancelled_because_the_stall_closed_first"] = len(state.cancelled)
        result.check(not state.undelivered, f"outbox rows not sent: {dict(state.by_status)}, "
                                            f"e.g. {list(state.undelivered.items())[:3]}, failed: {state.failed[:3]}")
        missing = [k for k in pings if tally.messages[k] != 1 or tally.ok_posts[k] != 1]
        result.check(not missing, f"{len(missing)} pings not posted exactly once, e.g. "
                                  f"{[(k, tally.messages[k], tally.ok_posts[k]) for k in missing[:5]]}")
        doubled = tally.doubled()
        fig["slack_keys_posted_twice"] = len(doubled)
        result.check(not doubled, f"posted more than once: {list(doubled.items())[:5]}")
        fig["pings_posted_once"] = len(pings) - len(missing)
        runs = db.rows("SELECT day, channel FROM digest_run")
        digest_keys = [k for k in state.keys if k.startswith("digest:") and not k.endswith(":chart")]
        fig["digest_runs"] = len(runs)
        fig["digest_messages"] = {k: tally.messages[k] for k in digest_keys}
        result.check(len(runs) == 1, f"digest runs: {runs}")
        result.check(bool(digest_keys) and all(tally.messages[k] == 1 for k in digest_keys),
                     f"digest messages: {fig['digest_messages']}")
        result.check(tally.uploads[DIGEST] <= 1, f"digest chart uploaded {tally.uploads[DIGEST]} times")

        # leadership: never two holders; never two processes that think they lead
        most = max((len(h) for _, h in samples), default=0)
        fig["leader_lock_samples"] = len(samples)
        fig["max_simultaneous_lock_holders"] = most
        result.check(most == 1, f"{most} simultaneous holders of the leader lock")
        both = [t for t, h in health_samples if len(h) > 1]
        result.check(not both, f"two servers reported 'leader' at once ({len(both)} samples)")
        spans = {p.name: _intervals(p, end) for p in procs}
        fig["leadership_from_logs"] = {k: [(round(s - t0, 1), round(e - t0, 1)) for s, e in v] for k, v in spans.items()}
        overlaps = [(x, y) for i, x in enumerate(procs) for y in procs[i + 1:]
                    for s1, e1 in spans[x.name] for s2, e2 in spans[y.name] if s1 < e2 and s2 < e1]
        result.check(not overlaps, f"leadership periods overlap: {[(x.name, y.name) for x, y in overlaps]}")
        result.check(sum(len(v) for v in spans.values()) >= 2, f"leadership periods: {spans}")
        for p in procs:
            result.check(p.alive(), f"{p.name} died: {p.log_tail(5)}")
        errors = [(p.name, line) for p in procs for line in p.log_text().splitlines()
                  if " ERROR " in line or "Traceback" in line]
        fig["error_log_lines"] = len(errors)
        result.check(not errors, f"error lines in the logs: {errors[:5]}")
    return result
