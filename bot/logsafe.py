"""Log lines that customer data cannot forge or leak through.

Traits, ticket text and ids are the customers' to write: a newline in one could forge a log
line ("...\\n2026-01-01 ERROR ..."), and their email addresses do not belong in an operator's
log. One formatter, installed by the CLI on every handler of the root logger, escapes
control characters in the message and masks email addresses (a***@example.com) in the whole
line, at every level.
"""

from __future__ import annotations

import logging
import re

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_EMAIL = re.compile(r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-])[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


def escape_controls(text: str) -> str:
    r"""Control characters as visible escapes (\n, \x1b, \u2028): one record, one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def mask_emails(text: str) -> str:
    """jane.doe@example.com -> j***@example.com: enough to tell addresses apart, not to mail one."""
    return _EMAIL.sub(r"\1***@\2", text)


class SafeFormatter(logging.Formatter):
    """A Formatter whose message cannot span lines and whose output shows no email address.
    A traceback keeps its own lines (they are the program's), emails masked."""

    def format(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)  # other handlers still see the original
        safe.msg, safe.args = escape_controls(record.getMessage()), None
        return mask_emails(super().format(safe))


def install(logger: logging.Logger | None = None) -> None:
    """Give every handler of `logger` (the root logger by default) a SafeFormatter with the
    format it already had."""
    for handler in (logger or logging.getLogger()).handlers:
        current = handler.formatter or logging.Formatter()
        handler.setFormatter(SafeFormatter(current._fmt, current.datefmt))
