"""Recovery email drafts (issue 4): the account's facts from the database (`facts`), the
prompt (`prompt`), and the drafter that asks an OpenAI-compatible model and falls back to the
built-in template (`llm`). The text rules and checks are pure, in rules/draft_text.py."""
