"""A company's domain from a person's e-mail address (pure).

An address at a free-mail provider says nothing about the company, so it gives no domain:
Stripe customers' domains and helpdesk requesters matched to an account by domain both rely
on that."""

from __future__ import annotations

import re

FREE_MAIL = frozenset(
    """gmail.com googlemail.com yahoo.com ymail.com hotmail.com outlook.com live.com msn.com
    icloud.com me.com mac.com aol.com proton.me protonmail.com gmx.com gmx.net gmx.de
    mail.com yandex.com yandex.ru qq.com 163.com web.de hey.com fastmail.com zoho.com""".split()
)
_DOMAIN_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")


def company_domain(email: object) -> str | None:
    """`ops@acme.com` -> `acme.com`; None for a free-mail address or anything not an address."""
    if not isinstance(email, str):
        return None
    local, sep, domain = email.strip().rpartition("@")
    if not sep or not local:
        return None
    domain = domain.lower().rstrip(".")
    if len(domain) > 253 or not _DOMAIN_RE.fullmatch(domain) or domain in FREE_MAIL:
        return None
    return domain
