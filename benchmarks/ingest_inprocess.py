"""The ingest path in one process, without HTTP: parse (as the /v1/batch route does, in its
worker thread) and store (as the writer thread does, `--group` batches per transaction),
each timed and optionally profiled with cProfile. Deterministic where the HTTP benchmark is
noisy: use it to see where the Python time of an event goes.

    python -m benchmarks.ingest_inprocess [--events 50000] [--group 4] [--profile parse|store]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

from benchmarks.ingest import account_batches, make_batches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--profile", choices=("parse", "store"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'sw.db'}"
        from bot.cli import _engine, _rules, _settings
        from bot.ingest.routes import _parse_tracking
        from bot.ingest.timewindow import apply_window
        from storage.db import utcnow
        from storage.ingest import store_batches

        settings = _settings()
        engine, rules = _engine(settings), _rules(settings)

        def parse(bodies):
            out = []
            for body in bodies:
                events, _rejected = _parse_tracking(body, None, None, True)
                now = utcnow()
                out.append(([apply_window(ev, now) for ev in events], now))
            return out

        def store(parsed):
            for i in range(0, len(parsed), args.group):
                group = parsed[i:i + args.group]
                store_batches(engine, [events for events, _ in group], rules, max(now for _, now in group))

        store(parse(account_batches()))
        bodies = make_batches(args.events, 100)
        profiler = cProfile.Profile()
        started, cpu = time.perf_counter(), time.process_time()
        if args.profile == "parse":
            profiler.enable()
        parsed = parse(bodies)
        profiler.disable()
        parse_s, parse_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        if args.profile == "store":
            profiler.enable()
        store(parsed)
        profiler.disable()
        store_s, store_cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"CPU per event: parse {1e6 * parse_cpu / args.events:.1f} us, store {1e6 * store_cpu / args.events:.1f} us")
        print(f"parse {args.events / parse_s:>9,.0f} events/s   store {args.events / store_s:>9,.0f} events/s "
              f"({args.events / store_cpu:,.0f} per CPU second)   "
              f"both {args.events / (parse_s + store_s):>9,.0f} events/s  (one thread, {args.group} batches a transaction)")
        if args.profile:
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats(args.top)
            stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
