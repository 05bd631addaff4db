"""Item 3, the mail outbox: kill -9 of the server mid-SMTP; no recovery email is delivered
twice, the rest resume (benchmarks/proof/mail_crash.py; the full run also waits out the
5-minute lease: a maybe-transmitted email becomes 'unknown', never re-sent)."""

from __future__ import annotations

import pytest

from benchmarks.proof import mail_crash
from tests.proof.params import FULL, PG_URL, one_backend, report, size

pytestmark = pytest.mark.timeout(900 if FULL else 240)


@pytest.mark.parametrize("backend", one_backend())
def test_kill_9_mid_smtp_delivers_no_email_twice(backend, tmp_path):
    result = mail_crash.run(backend, PG_URL, tmp_path, size(mail_crash), log=print)
    assert not result.problems, report(result)
    assert result.figures["delivered_twice"] == 0
