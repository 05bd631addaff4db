"""Slack's Block Kit limits (docs.slack.dev, Block Kit reference) and Stallwatch's own sizes for
pieces of user text, chosen so composed texts stay far under Slack's."""

MAX_BLOCKS = 50  # per message; slack_sdk does not check this one
MAX_VIEW_BLOCKS = 100  # per modal or Home tab
# Slack answers msg_blocks_too_long past roughly 13,000 characters of block text; keep margin.
TEXT_BUDGET = 12_000
# Views have no documented text limit short of the payload size; this only keeps Home sane.
VIEW_TEXT_BUDGET = 40_000
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
HEADER_TEXT_MAX = 150
CONTEXT_TEXT_MAX = 2000
BUTTON_VALUE_MAX = 2000
OPTION_VALUE_MAX = 150
URL_MAX = 3000

NAME_MAX = 120
WHY_MAX = 600
SHORT_MAX = 100
NOTE_MAX = 300
ROW_WHY_MAX = 240
