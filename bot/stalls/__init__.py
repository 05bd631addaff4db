"""The application layer without Slack: what a user can do to a stall or its recovery email
(use-cases), who may do it (permissions), the domain errors, and the process's services.
Never imports slack_sdk, slack_bolt or starlette: the Slack adapter (bot/slack) decodes a
click, calls a use-case here, and renders the result."""
