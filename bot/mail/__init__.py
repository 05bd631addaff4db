"""Outbound recovery email: the SMTP_URL contract and one delivery (`bot.mail.smtp`), and the
durable mail outbox that sends approved drafts exactly once (`bot.mail.outbox`)."""
