"""Log lines customer data can neither forge nor leak emails into (bot.logsafe, installed by
the CLI on the root logger's handlers)."""

from __future__ import annotations

import io
import logging

from click.testing import CliRunner
from hypothesis import given, strategies as st

from bot.cli import main
from bot.logsafe import escape_controls, mask_emails


def _cli_configured_root(monkeypatch) -> io.StringIO:
    """Run the real CLI entry point on a bare root logger and return what it logs to."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    CliRunner().invoke(main, ["rules", "--help"], catch_exceptions=False)
    [handler] = root.handlers
    stream = io.StringIO()
    handler.setStream(stream)
    return stream


def test_a_trait_cannot_forge_a_log_line_nor_leak_an_email(monkeypatch):
    stream = _cli_configured_root(monkeypatch)
    log = logging.getLogger("stallwatch.test")
    log.info("identify from %s with name %r", "Jane.Doe@customer.com", "Ada\n2026-01-01 ERROR forged")
    log.warning("trait %s", "x\r\n2026-01-01 00:00:00 ERROR root: forged\x1b[31m\u2028")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "J***@customer.com" in lines[0] and "Jane.Doe" not in lines[0]
    assert "\\n2026-01-01 ERROR forged" in lines[0]
    assert "\\r\\n2026-01-01" in lines[1] and "\\x1b[31m" in lines[1] and "\\u2028" in lines[1]
    # A traceback keeps its own lines; the email in the error is masked there too.
    try:
        raise ValueError("bad address jane@customer.com")
    except ValueError:
        log.exception("failed")
    assert "jane@customer.com" not in stream.getvalue() and "Traceback (most recent call last):" in stream.getvalue()


@given(st.text())
def test_any_text_stays_one_line(text):
    escaped = escape_controls(mask_emails(text))
    assert len(escaped.splitlines()) <= 1 and "\x00" not in escaped
