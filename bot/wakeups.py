"""Process-wide wake-up events for the senders (one Slack outbox sender and one mail sender per
process). Whoever commits rows to an outbox sets the event so they go out at once, rather than
at the sender's next poll; a set with no sender running is harmless."""

import threading

slack_outbox = threading.Event()
mail_outbox = threading.Event()
