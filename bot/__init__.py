"""The Stallwatch process: HTTP app, Slack listeners, scheduler, outboxes, CLI."""
