"""A Slack outage while ingest goes on (issue 6, item 4).

One `stallwatch serve` takes a steady stream (product usage at `usage_batches_per_second`
x 100 events/s, and ticket spikes on $60K accounts, each a P0 stall pinged to its owner's DM
and the alerts channel) through four phases:

    baseline      Slack answers normally
    rate limit    every Slack call answers 429 with Retry-After (`retry_after` s)
    server errors each call answers 5xx at random: half of them before doing anything, half
                  after the message was posted (the answer is lost: the outbox must find the
                  post by its metadata instead of posting again)
    recovery      Slack is back

The owners' Slack users are looked up before the storm (the first ping of each owner), so
the storm tests the outbox, not the lookup (see `test_storm.py` for what a lookup during a
storm does). Afterwards every ping is delivered, none twice, and ingest latency and
throughput in each phase are compared with the baseline: pings are sent by the outbox thread,
never in the request path, so a Slack outage must not slow ingest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proof import checks
from benchmarks.proof.harness import (ALERTS, Database, Lane, Loader, Result, Stack, percentile, rules_text,
                                      send_all, wait_until)
from benchmarks.proof.workload import SteadyStream, csm_email, csm_user


@dataclass
class Params:
    baseline: float = 30.0
    rate_limit: float = 30.0
    retry_after: int = 5
    server_errors: float = 30.0
    error_rate: float = 0.3  # per call; half of those after the call took effect
    recovery: float = 15.0
    usage_batches_per_second: float = 10.0  # 100 events each: 1,000 events/s
    spikes_per_second: float = 1.0
    accounts: int = 5_000
    csms: int = 10
    drain_timeout: float = 240.0


SHORT = Params(baseline=5.0, rate_limit=5.0, retry_after=2, server_errors=5.0, recovery=2.0,
               usage_batches_per_second=5.0, spikes_per_second=1.0, accounts=1_000)
FULL = Params()
PHASES = ("baseline", "rate_limit", "server_errors", "recovery")


def run(backend: str, pg_url: str | None, workdir: Path, params: Params = SHORT, log=print) -> Result:
    result = Result()
    fig = result.figures
    db = Database.create(backend, Path(workdir), pg_url)
    fig["database"] = backend
    with Stack(workdir, db, rules=rules_text(scan_minutes=1.0)) as stack:
        fake = stack.fake
        for k in range(params.csms):
            fake.add_user(csm_user(k), csm_email(k))
        srv = stack.serve("serve").start()
        stream = SteadyStream(f"storm{int(time.time())}", accounts=params.accounts, csms=params.csms)
        total = params.baseline + params.rate_limit + params.server_errors + params.recovery
        n_spikes = int(total * params.spikes_per_second * 1.5) + params.csms + 10
        spike_ids, spike_setup = stream.known_spike_accounts(n_spikes)
        setup = send_all([srv.url], stream.account_setup() + spike_setup, concurrency=4)
        result.check(all(o.ok for o in setup.outcomes), "account setup failed")
        # Warm-up: one spike per owner, so every owner's Slack user is known before the storm.
        warm = send_all([srv.url], [d for k in range(params.csms) for d in stream.spike_on(spike_ids[k])],
                        concurrency=1)
        result.check(all(o.ok for o in warm.outcomes), "warm-up failed")
        wait_until(lambda: checks.outbox_drained(db) and not db.scalar(
            "SELECT count(*) FROM account WHERE id LIKE 'known-%' AND owner_slack_id IS NULL"), 60,
            what="owners looked up")
        next_spike = iter(spike_ids[params.csms:])
        spiked: list[str] = []

        def spike(_: int):
            account = next(next_spike)
            spiked.append(account)
            return stream.spike_on(account)

        loader = Loader(srv.url, [Lane("usage", lambda i: [stream.usage(i)], params.usage_batches_per_second),
                                  Lane("spikes", spike, params.spikes_per_second)], retry=False).start()
        marks = {"baseline": time.time()}
        time.sleep(params.baseline)
        marks["rate_limit"] = time.time()
        fake.rate_limit_for(params.rate_limit, retry_after=params.retry_after)
        log(f"  Slack answers 429 (Retry-After {params.retry_after} s) for {params.rate_limit:.0f} s")
        time.sleep(params.rate_limit)
        marks["server_errors"] = time.time()
        fake.server_errors(probability=params.error_rate / 2, seed=7)
        fake.server_errors(probability=params.error_rate / 2, deliver=True)
        log(f"  Slack answers 5xx to {params.error_rate:.0%} of calls for {params.server_errors:.0f} s "
            f"(half of them after posting)")
        time.sleep(params.server_errors)
        fake.clear_faults()
        marks["recovery"] = time.time()
        time.sleep(params.recovery)
        report = loader.stop()
        marks["end"] = report.finished
        try:
            drain = wait_until(lambda: checks.outbox_drained(db), params.drain_timeout, interval=0.25,
                               what="every ping delivered after the storm")
            fig["all_delivered_after_slack_recovered_s"] = round(time.time() - marks["recovery"], 1)
        except TimeoutError as exc:
            result.problems.append(f"{exc}: {dict(checks.outbox_state(db).by_status)}")
        # --- ingest, phase by phase
        bad = report.failures()
        fig["ingest_requests"] = len(report.outcomes)
        fig["ingest_non_2xx"] = len(bad)
        result.check(not bad, f"{len(bad)} ingest requests failed: {[(o.status, o.error) for o in bad[:3]]}")
        phases = {}
        bounds = [(name, marks[name], marks[nxt]) for name, nxt in zip(PHASES, PHASES[1:] + ("end",))]
        for name, since, until in bounds:
            usage = [o for o in report.outcomes if o.ok and o.delivery.tag == "usage" and since <= o.due < until]
            tickets = [o.latency * 1000 for o in report.outcomes if o.ok and o.delivery.tag == "ticket"
                       and since <= o.due < until]
            lat = [o.latency * 1000 for o in usage]
            lag = [o.lag * 1000 for o in usage]
            phases[name] = {
                "seconds": round(until - since, 1),
                "events_per_s": round(sum(len(o.delivery.ids) for o in usage) / (until - since)),
                "usage_p50_ms": round(percentile(lat, 0.5), 1), "usage_p99_ms": round(percentile(lat, 0.99), 1),
                "ticket_p50_ms": round(percentile(tickets, 0.5), 1),
                "ticket_p99_ms": round(percentile(tickets, 0.99), 1),
                "schedule_lag_p99_ms": round(percentile(lag, 0.99), 1),
            }
        fig["phases"] = phases
        fig["offered_events_per_s"] = round(params.usage_batches_per_second * stream.batch)
        base = phases["baseline"]
        for name in ("rate_limit", "server_errors"):
            p = phases[name]
            slower = p["usage_p99_ms"] > max(3 * base["usage_p99_ms"], base["usage_p99_ms"] + 100)
            behind = p["events_per_s"] < 0.95 * fig["offered_events_per_s"]
            result.check(not slower and not behind,
                         f"ingest slowed during {name}: {p} vs baseline {base}")
        # --- Slack: every ping once
        state = checks.outbox_state(db)
        tally = checks.slack_tally(fake)
        pings = checks.expected_pings(db, ALERTS)
        fig["pings_expected"] = len(pings)
        fig["spikes_during_run"] = len(spiked)
        fig["outbox"] = dict(state.by_status)
        fig["slack_answers"] = {f"{m} {s}": n for (m, s), n in sorted(tally.calls.items())}
        fig["slack_429s"] = sum(n for (m, s), n in tally.calls.items() if s == 429)
        fig["slack_5xx"] = sum(n for (m, s), n in tally.calls.items() if s >= 500)
        result.check(fig["slack_429s"] > 0 and fig["slack_5xx"] > 0, "the storm did not happen")
        fig["pings_cancelled_because_the_stall_closed_first"] = len(state.cancelled)
        result.check(not state.undelivered, f"outbox not all sent: {dict(state.by_status)}; failed: {state.failed[:3]}")
        not_once = [k for k in pings if tally.messages[k] != 1]
        result.check(not not_once, f"{len(not_once)} pings not at Slack exactly once: "
                                   f"{[(k, tally.messages[k]) for k in not_once[:5]]}")
        doubled = tally.doubled()
        fig["slack_keys_posted_twice"] = len(doubled)
        result.check(not doubled, f"posted twice: {list(doubled.items())[:5]}")
        missing = [a for a in spiked if not db.scalar(
            "SELECT count(*) FROM stall WHERE account_id = :a AND rule = 'ticket_spike'", a=a)]
        result.check(not missing, f"{len(missing)} spikes without a stall")
        found = sum("had reached Slack" in line for line in srv.log_text().splitlines())
        fig["posts_found_by_metadata_not_reposted"] = found
        # slack_sdk logs every HTML 5xx page it cannot decode as an ERROR: that is the storm itself
        errors = [line for line in srv.log_text().splitlines()
                  if " ERROR " in line and "slack_sdk.web.base_client: Failed to decode" not in line]
        fig["error_log_lines"] = len(errors)
        result.check(not errors, f"errors in the log: {errors[:3]}")
    return result
