"""Process configuration from the environment (the contract's variables, DESIGN.md)."""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rules.config import Rules, parse_rules


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(default="sqlite:///./stallwatch.db", alias="DATABASE_URL")
    slack_bot_token: str | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: str | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    rules_path: str | None = Field(default=None, alias="STALLWATCH_RULES")
    write_key: str | None = Field(default=None, alias="STALLWATCH_WRITE_KEY")
    client_key: str | None = Field(default=None, alias="STALLWATCH_CLIENT_KEY")  # public: browser SDKs
    segment_shared_secret: str | None = Field(default=None, alias="SEGMENT_SHARED_SECRET")
    stripe_webhook_secret: str | None = Field(default=None, alias="STRIPE_WEBHOOK_SECRET")
    tickets_shared_secret: str | None = Field(default=None, alias="TICKETS_SHARED_SECRET")
    zendesk_webhook_secret: str | None = Field(default=None, alias="ZENDESK_WEBHOOK_SECRET")
    intercom_client_secret: str | None = Field(default=None, alias="INTERCOM_CLIENT_SECRET")
    openai_api_key: str | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    llm_model: str = Field(default="gpt-4o-mini", alias="STALLWATCH_LLM_MODEL")
    smtp_url: str | None = Field(default=None, alias="SMTP_URL")
    mail_from: str | None = Field(default=None, alias="STALLWATCH_MAIL_FROM")
    alerts_channel: str | None = Field(default=None, alias="STALLWATCH_ALERTS_CHANNEL")
    digest_channel: str | None = Field(default=None, alias="STALLWATCH_DIGEST_CHANNEL")
    ops_channel_setting: str | None = Field(default=None, alias="STALLWATCH_OPS_CHANNEL")
    admins: str = Field(default="", alias="STALLWATCH_ADMINS")
    team: str = Field(default="", alias="STALLWATCH_TEAM")  # user group ids (S...) and/or user ids
    hubspot_token: str | None = Field(default=None, alias="HUBSPOT_TOKEN")  # private app token: CRM sync
    hubspot_api_url: str = Field(default="https://api.hubapi.com", alias="HUBSPOT_API_URL")
    port: int = Field(default=3000, alias="PORT")

    @field_validator(
        "slack_bot_token", "slack_signing_secret", "slack_app_token", "write_key", "client_key",
        "segment_shared_secret", "stripe_webhook_secret", "tickets_shared_secret", "zendesk_webhook_secret",
        "intercom_client_secret", "hubspot_token", "openai_api_key", "openai_base_url", "smtp_url", "mail_from",
        "alerts_channel", "digest_channel", "ops_channel_setting", "rules_path",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value):
        # An exported-but-empty variable means "not configured", not "the empty secret".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def ops_channel(self) -> str | None:
        return self.ops_channel_setting or self.digest_channel

    @property
    def admin_ids(self) -> frozenset[str]:
        return frozenset(_ids(self.admins))

    @property
    def team_groups(self) -> tuple[str, ...]:
        """The Slack user groups (ids starting with "S") of STALLWATCH_TEAM, read from Slack."""
        return tuple(t for t in _ids(self.team) if t.startswith("S"))

    @property
    def team_user_ids(self) -> frozenset[str]:
        """The user ids listed in STALLWATCH_TEAM itself (members without a user group)."""
        return frozenset(t for t in _ids(self.team) if not t.startswith("S"))

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token)

    @property
    def hubspot_enabled(self) -> bool:
        return bool(self.hubspot_token)

    @cached_property
    def rules(self) -> Rules:
        return load_rules(self.rules_path)


def _ids(value: str) -> list[str]:
    """A comma-separated list of Slack ids (blanks ignored)."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def default_rules_text() -> str:
    return resources.files("rules").joinpath("default_rules.toml").read_text(encoding="utf-8")


def load_rules(path: str | Path | None = None) -> Rules:
    """The rules file at `path`, or the packaged default; raises RulesError with locations."""
    if path is None:
        return parse_rules(default_rules_text(), "default_rules.toml")
    path = Path(path)
    return parse_rules(path.read_text(encoding="utf-8"), str(path))
