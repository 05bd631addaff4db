"""How long a CSM waits for a recovery draft (issue 4: "a slow or failing LLM still gives the
CSM a usable (template) draft within 15 s"), against the fake OpenAI-compatible server over
real HTTP: a model that answers, one that fails (HTTP 500), one that sleeps 30 s, and one that
trickles a byte a second (no read ever times out: only the drafter's hard deadline ends it).

    python -m benchmarks.draft_latency [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone

from bot.drafting.llm import Drafter, forget_formats
from bot.settings import Settings
from rules.config import Outreach
from rules.draft_text import DraftFacts
from tests.fakes.openai_api import FakeOpenAI

NOW = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
FACTS = DraftFacts(
    account_name="Acme Corp", track="high_touch", stage="Onboarding", plan="enterprise", arr=50000.0,
    contact_first_name="Dana", recipient_email="dana@acme.io", recipient_contact_id="acme-dana",
    steps_done=(("Sign up", NOW - timedelta(days=6)), ("Create a project", NOW - timedelta(days=5))),
    steps_missing=("Connect integration", "Invite a teammate"), stalled_step="Connect integration",
    rule="step_stall", detail="5 days on 'Connect integration'", days_stalled=5.0, csm_name="Jane", now=NOW,
)
SCENARIOS = {
    "answers": lambda llm: llm.reply(subject="Connecting Acme", body="Hi Dana,\n\nShall we connect it together?\n\nJane"),
    "fails (500)": lambda llm: llm.fail_always(500),
    "sleeps 30 s": lambda llm: llm.delay(30),
    "trickles 1 byte/s": lambda llm: llm.trickle(1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'model':<20} {'source':<18} {'median':>8} {'max':>8}")
    for name, arrange in SCENARIOS.items():
        times, source = [], ""
        for _ in range(args.runs):
            with FakeOpenAI() as llm:
                arrange(llm)
                forget_formats()
                settings = Settings(_env_file=None, OPENAI_API_KEY=llm.api_key, OPENAI_BASE_URL=llm.url,
                                    STALLWATCH_LLM_MODEL="fake-model")
                started = time.monotonic()
                result = Drafter(settings, Outreach()).draft(FACTS)
                times.append(time.monotonic() - started)
                source = result.source
        print(f"{name:<20} {source:<18} {statistics.median(times):>7.2f}s {max(times):>7.2f}s")


if __name__ == "__main__":
    main()
