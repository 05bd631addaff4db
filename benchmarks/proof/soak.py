"""Soak: a sustained stream with stable memory and no error (issue 6, item 5).

One `stallwatch serve` (scheduler, outbox sender and Slack on the fake all running) takes
`events_per_second` product events over `accounts` known accounts from four paced clients,
plus a ticket spike on a new account now and then (a ping: users.lookupByEmail, the outbox,
chat.postMessage), for `seconds`. The server's resident memory (VmRSS) is sampled every
`sample_every` seconds. After the warm-up, memory must grow less than 10%: the median RSS
of the last `window` seconds against the median of the `window` seconds after warm-up. Every
request must get a 2xx, every acknowledged event must be stored, no ERROR may be logged.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proof import checks
from benchmarks.proof.harness import (Database, Lane, Loader, Result, Sampler, Stack, percentile, rules_text,
                                      send_all, wait_until)
from benchmarks.proof.workload import SteadyStream, csm_email, csm_user


@dataclass
class Params:
    seconds: float = 600.0
    warmup: float = 120.0
    window: float = 60.0
    events_per_second: float = 1000.0
    clients: int = 4
    spikes_per_second: float = 0.2
    accounts: int = 10_000
    sample_every: float = 5.0
    max_growth: float = 0.10


SHORT = Params(seconds=24.0, warmup=8.0, window=5.0, sample_every=1.0, accounts=2_000)
FULL = Params()


def run(backend: str, pg_url: str | None, workdir: Path, params: Params = SHORT, log=print) -> Result:
    result = Result()
    fig = result.figures
    db = Database.create(backend, Path(workdir), pg_url)
    fig["database"] = backend
    with Stack(workdir, db, rules=rules_text(scan_minutes=1.0)) as stack:
        for k in range(10):
            stack.fake.add_user(csm_user(k), csm_email(k))
        srv = stack.serve("serve").start()
        stream = SteadyStream(f"soak{int(time.time())}", accounts=params.accounts, csms=10)
        setup = send_all([srv.url], stream.account_setup(), concurrency=4)
        result.check(all(o.ok for o in setup.outcomes), "account setup failed")
        per_client = params.events_per_second / stream.batch / params.clients
        lanes = [Lane(f"usage{c}", (lambda c: lambda i: [stream.usage(i * params.clients + c)])(c), per_client)
                 for c in range(params.clients)]
        lanes.append(Lane("spikes", lambda i: stream.spike_account()[1], params.spikes_per_second))
        rss = Sampler(lambda: (srv.rss_kb(), srv.cpu_seconds()), params.sample_every)
        started = time.time()
        rss.start()
        loader = Loader(srv.url, lanes).start()
        last = 0.0
        while time.time() - started < params.seconds:
            time.sleep(1.0)
            if time.time() - last >= 60 or (params.seconds < 120 and time.time() - last >= 10):
                last = time.time()
                sample = rss.samples[-1][1] if rss.samples else (None, None)
                log(f"  {time.time() - started:5.0f} s: RSS {sample[0] / 1024 if sample[0] else 0:.1f} MB, "
                    f"{len(loader.report.outcomes)} requests, "
                    f"{sum(1 for o in loader.report.outcomes if not o.ok)} failed")
        offered_for = time.time() - loader.report.started  # the requests in flight at the stop finish after it
        report = loader.stop()
        samples = rss.stop()
        seconds = report.finished - report.started
        # --- memory
        points = [(t - started, kb) for t, (kb, _) in samples if kb]
        after_warmup = [kb for t, kb in points if params.warmup <= t < params.warmup + params.window]
        final = [kb for t, kb in points if t >= params.seconds - params.window]
        base, end = statistics.median(after_warmup), statistics.median(final)
        growth = end / base - 1
        fig["rss_mb_at_start"] = round(points[0][1] / 1024, 1)
        fig["rss_mb_after_warmup"] = round(base / 1024, 1)
        fig["rss_mb_at_end"] = round(end / 1024, 1)
        fig["rss_mb_max"] = round(max(kb for _, kb in points) / 1024, 1)
        fig["rss_growth_after_warmup"] = f"{growth:+.1%}"
        fig["rss_samples"] = len(points)
        fig["rss_curve_mb"] = [(round(t), round(kb / 1024, 1)) for t, kb in points[::max(1, len(points) // 20)]]
        result.check(growth < params.max_growth, f"RSS grew {growth:+.1%} after warm-up ({base} -> {end} kB)")
        cpu = [c for _, (_, c) in samples if c is not None]
        if len(cpu) > 1:
            fig["server_cpu_percent_of_one_core"] = round(100 * (cpu[-1] - cpu[0]) / (samples[-1][0] - samples[0][0]))
        # --- load and errors
        events = sum(len(o.delivery.ids) for o in report.outcomes if o.ok)
        fig["seconds"] = round(seconds, 1)
        fig["requests"] = len(report.outcomes)
        fig["events_acknowledged"] = events
        fig["events_per_s"] = round(sum(len(o.delivery.ids) for o in report.outcomes
                                        if o.ok and o.delivery.tag == "usage") / offered_for)
        lat = [o.latency * 1000 for o in report.outcomes if o.ok and o.delivery.tag == "usage"]
        lag = [o.lag * 1000 for o in report.outcomes if o.delivery.tag == "usage"]
        fig["latency_p50_ms"] = round(percentile(lat, 0.5), 1)
        fig["latency_p99_ms"] = round(percentile(lat, 0.99), 1)
        fig["latency_max_ms"] = round(max(lat), 1)
        fig["schedule_lag_p99_ms"] = round(percentile(lag, 0.99), 1)
        failed = report.failures()
        fig["requests_failed"] = len(failed)
        result.check(not failed, f"{len(failed)} requests failed: {[(o.status, o.error) for o in failed[:3]]}")
        result.check(fig["events_per_s"] >= 0.97 * params.events_per_second,
                     f"offered {params.events_per_second:.0f} events/s, achieved {fig['events_per_s']}")
        acked = report.acked_ids()
        n, d = checks.event_counts(db)
        stored = checks.stored_ids(db)
        fig["events_stored"] = n
        result.check(n == d and acked <= stored, f"{len(acked - stored)} acknowledged events missing; {n} rows, {d} distinct")
        try:
            wait_until(lambda: checks.outbox_drained(db), 60, what="outbox drained")
        except TimeoutError as exc:
            result.problems.append(str(exc))
        state = checks.outbox_state(db)
        tally = checks.slack_tally(stack.fake)
        fig["outbox"] = dict(state.by_status)
        fig["slack_keys_posted_twice"] = len(tally.doubled())
        result.check(not tally.doubled() and not state.undelivered, f"outbox: {dict(state.by_status)}, {tally.doubled()}")
        scans = [line for line in srv.log_text().splitlines() if "bot.scheduler: scan at" in line
                 or ("INFO bot.scheduler" in line and " scan " in line)]
        fig["scans_during_soak"] = len(scans)
        errors = [line for line in srv.log_text().splitlines() if " ERROR " in line or "Traceback" in line]
        fig["error_log_lines"] = len(errors)
        result.check(not errors, f"errors in the log: {errors[:3]}")
        result.check(srv.alive(), "the server died")
    return result
