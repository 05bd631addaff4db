"""How long the output check on a model's draft (rules.draft_text.check_model_draft) and the
approval's check (check_draft) take on hostile text of the largest size a body may have (3,000
characters): the approval runs inside Slack's 3-second ack, so no input may make them slow
(issue 10: a regex that backtracks quadratically on "a.a.a.a..." took about 1 s).

    python -m benchmarks.draft_check [--runs 5]
"""

from __future__ import annotations

import argparse
import time

from rules.draft_text import BODY_MAX, DraftText, check_draft, check_model_draft
from tests.rules.test_draft_injection import ACCEPTED, REFUSED, facts

HOSTILE = {
    "one long word": "a" * BODY_MAX,
    "a.a.a.a...": "a." * (BODY_MAX // 2),
    "1.1.1.1...": "1." * (BODY_MAX // 2),
    "a-a-a-a...": "a-" * (BODY_MAX // 2),
    "a@a@a@...": "a@" * (BODY_MAX // 2),
    "x@y.x@y....": "x@y." * (BODY_MAX // 4),
    "a dot a dot...": "a dot " * (BODY_MAX // 6),
    "[.][.][.]...": "[.]" * (BODY_MAX // 3),
    "digits and spaces": "1 " * (BODY_MAX // 2),
    "send xxxx...": "send " + "x" * (BODY_MAX - 5),
}


def worst_ms(fn, runs: int) -> float:
    worst = 0.0
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        worst = max(worst, (time.perf_counter() - started) * 1000)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    f = facts()
    print(f"{'input (3,000 characters)':28} {'check_model_draft':>18} {'check_draft':>12}   (worst of {args.runs}, ms)")
    for name, body in HOSTILE.items():
        text = DraftText("Checking in", body)
        model = worst_ms(lambda: check_model_draft(text, f), args.runs)
        approval = worst_ms(lambda: check_draft(text, allowed_urls=f.allowed_urls), args.runs)
        print(f"{name:28} {model:18.1f} {approval:12.1f}")
    corpus = [DraftText("Checking in", body) for body, *_ in REFUSED] + [DraftText(*a) for a in ACCEPTED]
    started = time.perf_counter()
    for text in corpus:
        check_model_draft(text, f)
    per = (time.perf_counter() - started) * 1000 / len(corpus)
    print(f"the corpus ({len(corpus)} answers): {per:.2f} ms per answer on average")


if __name__ == "__main__":
    main()
