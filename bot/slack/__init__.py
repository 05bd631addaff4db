"""Slack delivery: the Web API clients and the durable outbox every outgoing message goes through."""
