"""The rules file: its schema, and parsing TOML text into validated `Rules`.

Parsing is pure (text in, `Rules` or `RulesError` out); reading the file is the caller's job.
Errors are located: each names the key path and, where it can be found, the line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

PRIORITIES = ("P0", "P1", "P2", "P3")
TRACKS = ("high_touch", "standard", "self_serve")
STAGES = ("Onboarding", "Activation", "Adoption", "Expansion", "Renewal", "Churn risk")

# Infinity and NaN are valid TOML floats; no threshold or weight means anything with them.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# Durations become timedeltas added to event times: bound them (ten years) so a typo such as
# `checkpoint_days = 1e300` is a located error here, not an OverflowError in a scan.
Days = Annotated[float, Field(gt=0, le=3650, allow_inf_nan=False)]
NonNegativeDays = Annotated[float, Field(ge=0, le=3650, allow_inf_nan=False)]
Hours = Annotated[float, Field(gt=0, le=3650 * 24, allow_inf_nan=False)]
NonNegativeHours = Annotated[float, Field(ge=0, le=3650 * 24, allow_inf_nan=False)]
Minutes = Annotated[float, Field(gt=0, le=3650 * 24 * 60, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    event: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    stall_after_hours: Hours = 48


class Journey(_Strict):
    activation_event: str = Field(min_length=1, max_length=200)
    checkpoint_days: Days = 14
    renewal_window_days: Days = 60
    steps: list[Step] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _distinct_events(self) -> "Journey":
        seen: set[str] = set()
        for step in self.steps:
            if step.event in seen:
                raise ValueError(f"step event {step.event!r} is listed twice")
            seen.add(step.event)
        if self.activation_event in seen:
            raise ValueError("the activation event must not also be an onboarding step")
        return self

    @property
    def first_step(self) -> Step:
        return self.steps[0]

    def step(self, event: str) -> Step | None:
        return next((s for s in self.steps if s.event == event), None)


class TrackRule(_Strict):
    track: Literal["high_touch", "standard", "self_serve"]
    min_arr: NonNegative | None = None
    max_arr: NonNegative | None = None
    plans: list[str] | None = None
    min_seats: int | None = Field(default=None, ge=0)
    max_seats: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _has_condition(self) -> "TrackRule":
        if all(v is None for v in (self.min_arr, self.max_arr, self.plans, self.min_seats, self.max_seats)):
            raise ValueError("a track rule needs at least one condition (min_arr, max_arr, plans, min_seats, max_seats)")
        # A rule whose range is empty would silently never match.
        if self.min_arr is not None and self.max_arr is not None and self.min_arr > self.max_arr:
            raise ValueError("min_arr is greater than max_arr, so the rule can never match")
        if self.min_seats is not None and self.max_seats is not None and self.min_seats > self.max_seats:
            raise ValueError("min_seats is greater than max_seats, so the rule can never match")
        return self


class TrackThresholds(_Strict):
    """A track's own thresholds; a key left out keeps the journey's value."""

    # Replaces every step's `stall_after_hours` for accounts of this track.
    stall_after_hours: Hours | None = None
    checkpoint_days: Days | None = None


class TrackSettings(_Strict):
    """Per-track overrides, `[tracks.<track>]`: all optional, so older files stay valid."""

    # Whether this track's real-time priorities ping (owner DM, alerts channel); None: the
    # track's default (self_serve: digest only; the others: real time).
    realtime: StrictBool | None = None
    thresholds: TrackThresholds = TrackThresholds()


# Self-serve accounts have no CSM to ping: the digest covers them unless the rules say otherwise.
DEFAULT_REALTIME = {"high_touch": True, "standard": True, "self_serve": False}


class Tracks(_Strict):
    default: Literal["high_touch", "standard", "self_serve"] = "standard"
    rules: list[TrackRule] = Field(default_factory=list)
    high_touch: TrackSettings = TrackSettings()
    standard: TrackSettings = TrackSettings()
    self_serve: TrackSettings = TrackSettings()

    def settings(self, track: str | None) -> TrackSettings | None:
        return getattr(self, track, None) if track in TRACKS else None

    def pings_realtime(self, track: str | None) -> bool:
        """Whether stalls of `track` ping in real time (an unknown track: yes, as before)."""
        settings = self.settings(track)
        if settings is None:
            return True
        return DEFAULT_REALTIME[track] if settings.realtime is None else settings.realtime


class RuleBase(_Strict):
    enabled: bool = True
    weight: Positive = 1.0


class StepStall(RuleBase):
    # A step stall opens only once it has lasted this long past its threshold: many customers
    # a little past `stall_after_hours` finish the step within hours, and a step event that
    # arrives late (an offline client's batch) lands within the delay. The stall still dates
    # from its threshold (severity, detection delay); 0 opens it at the threshold.
    confirm_hours: NonNegativeHours = 6


class NotActivated(RuleBase):
    # As for step_stall; by default none: the day-N checkpoint is rarely crossed by a hair.
    confirm_hours: NonNegativeHours = 0


class TicketSpike(RuleBase):
    window_days: Days = 7
    min_tickets: int = Field(default=3, ge=1)
    min_same_topic: int = Field(default=2, ge=1)


class UsageDrop(RuleBase):
    ratio: float = Field(default=0.5, gt=0, lt=1, allow_inf_nan=False)
    min_previous_days: int = Field(default=2, ge=1, le=7)
    # Hysteresis: a usage_drop stall (and a renewal_risk stall's "usage down") opens below
    # `ratio` but closes only once usage is back to this share of the week before. Active days
    # are small whole numbers, so a ratio near `ratio` flips with a single day (2 of 5 days,
    # then 3 of 4): without a margin the stall opened and closed on alternate days.
    recover_ratio: float = Field(default=0.8, gt=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _recover_above_ratio(self) -> "UsageDrop":
        # Only when both are set in the file: a file that raises `ratio` above the default
        # `recover_ratio` stays valid (the plan uses the higher of the two).
        if "recover_ratio" in self.model_fields_set and self.recover_ratio < self.ratio:
            raise ValueError("recover_ratio must be at least ratio (a stall cannot close below the level it opens at)")
        return self


class RenewalRisk(RuleBase):
    weight: Positive = 1.5
    within_days: Days = 60


class StallRules(_Strict):
    step_stall: StepStall = StepStall()
    not_activated: NotActivated = NotActivated()
    ticket_spike: TicketSpike = TicketSpike()
    usage_drop: UsageDrop = UsageDrop()
    renewal_risk: RenewalRisk = RenewalRisk()
    payment_failed: RuleBase = RuleBase(weight=1.2)


class Scoring(_Strict):
    per_day_past_threshold: NonNegative = 0.1
    max_time_factor: float = Field(default=3.0, ge=1, allow_inf_nan=False)
    per_open_ticket: NonNegative = 0.05
    max_ticket_factor: float = Field(default=1.5, ge=1, allow_inf_nan=False)
    payment_failed: NonNegative = 0.25
    renewal_near: NonNegative = 0.2
    stage_weights: dict[str, Positive] = Field(default_factory=lambda: {s: 1.0 for s in STAGES})

    @field_validator("stage_weights")
    @classmethod
    def _known_stages(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
        return {s: weights.get(s, 1.0) for s in STAGES}


class Priorities(_Strict):
    P0: NonNegative = 25000
    P1: NonNegative = 10000
    P2: NonNegative = 2000

    @model_validator(mode="after")
    def _descending(self) -> "Priorities":
        if not (self.P0 >= self.P1 >= self.P2):
            raise ValueError("priority bands must satisfy P0 >= P1 >= P2")
        return self

    def band(self, score: float) -> str:
        if score >= self.P0:
            return "P0"
        if score >= self.P1:
            return "P1"
        if score >= self.P2:
            return "P2"
        return "P3"


_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
# IANA zone names: path segments of letters, digits, "_", "+", "-". Checked before ZoneInfo,
# which otherwise reads odd files (and recurses on very deep paths).
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")


def _clock(value: str) -> time:
    # fullmatch, not match + "$": "$" also accepts a trailing newline.
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise ValueError("must be a time of day written HH:MM, e.g. \"08:30\"")
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


class Routing(_Strict):
    realtime: list[Literal["P0", "P1", "P2", "P3"]] = Field(default_factory=lambda: ["P0", "P1"])
    quiet_hours_start: str | None = "20:00"
    quiet_hours_end: str | None = "08:00"
    hourly_budget_per_csm: int = Field(default=6, ge=1)
    escalate_p0_after_minutes: Minutes = 60
    scan_interval_minutes: Minutes = 5

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _check_clock(cls, value: str | None) -> str | None:
        if value is not None:
            _clock(value)
        return value

    def in_quiet_hours(self, local: time) -> bool:
        """Whether a local time of day falls in quiet hours (the window may wrap midnight)."""
        if not self.quiet_hours_start or not self.quiet_hours_end:
            return False
        start, end = _clock(self.quiet_hours_start), _clock(self.quiet_hours_end)
        if start == end:
            return False
        if start < end:
            return start <= local < end
        return local >= start or local < end


class Digest(_Strict):
    time: str = "09:00"
    timezone: str = "UTC"
    # Stalled accounts listed in all (the rest counted per owner), and per owner.
    max_items: int = Field(default=150, ge=1, le=500)
    per_owner: int = Field(default=25, ge=1, le=200)
    # The optional per-CSM morning DM (bot/slack/morning.py): off unless asked for, at
    # `morning_time` in `timezone`.
    morning_dm: bool = False
    morning_time: str = "08:30"

    @field_validator("time", "morning_time")
    @classmethod
    def _check_time(cls, value: str) -> str:
        _clock(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # tz database lookup, no clock

        unknown = f"unknown time zone {value[:80]!r} (use an IANA name like \"Europe/Paris\")"
        if len(value) > 100 or not _ZONE_NAME.fullmatch(value):
            raise ValueError(unknown)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(unknown) from exc
        return value

    @property
    def clock(self) -> time:
        return _clock(self.time)

    @property
    def morning_clock(self) -> time:
        return _clock(self.morning_time)


class Outreach(_Strict):
    max_recovery_attempts: int = Field(default=2, ge=1, le=10)
    recheck_days: Days = 3
    min_days_between_emails: NonNegativeDays = 7
    help_url: str = ""
    booking_url: str = ""


class Tracking(_Strict):
    """Tracking health (rules.tracking): volume drops, quiet sources, issues clearing."""

    # An event is dropping below this share of what a quiet day of the last week brought
    # in the same hours.
    volume_drop_ratio: float = Field(default=0.2, gt=0, lt=1, allow_inf_nan=False)
    # Events arriving less than this many times a day (median day) are not judged.
    min_baseline: int = Field(default=50, ge=1)
    # The window judged grows back from now, hour by hour, until a quiet day fills it with
    # this many events: fewer, and a drop could be chance.
    min_window_events: int = Field(default=20, ge=1)
    # A source (segment, stripe, tickets) without any event for this long, when it usually has some.
    quiet_source_hours: float = Field(default=6, gt=0, le=48, allow_inf_nan=False)
    # Days of history each window is compared with (the same hours of each day).
    baseline_days: int = Field(default=7, ge=3, le=28)
    # A tracking issue with no new occurrence for this long is cleared, and the clearing posted.
    clear_after_hours: Hours = 24


class Health(_Strict):
    """`[health]`: the 0-100 account health score. Each factor takes points off 100; the
    factors that took the most are the account's reasons. All optional, so older files stay valid."""

    # Each live stall of the account, by its priority ...
    stall_P0: NonNegative = 35
    stall_P1: NonNegative = 25
    stall_P2: NonNegative = 15
    stall_P3: NonNegative = 8
    # ... plus this much per day it has lasted, up to max_stall_day_points per stall.
    per_stall_day: NonNegative = 1.0
    max_stall_day_points: NonNegative = 10
    # Not activated yet: this many points times the share of onboarding steps not done.
    onboarding: NonNegative = 15
    # Activated: this many points times the share of last week's active days lost this week ...
    usage_drop: NonNegative = 20
    # ... or, with no active day in either week, these.
    no_usage: NonNegative = 15
    per_open_ticket: NonNegative = 5
    # Open tickets of priority "urgent" or "high" count this much more each.
    per_escalated_ticket: NonNegative = 5
    max_ticket_points: NonNegative = 20
    payment_failed: NonNegative = 20
    # A renewal within renewal_near_days: up to this many points, all of them on the day.
    renewal_near: NonNegative = 10
    renewal_near_days: Days = 60

    @model_validator(mode="after")
    def _stalls_descending(self) -> "Health":
        if not (self.stall_P0 >= self.stall_P1 >= self.stall_P2 >= self.stall_P3):
            raise ValueError("stall points must satisfy stall_P0 >= stall_P1 >= stall_P2 >= stall_P3")
        return self


# A HubSpot property's internal name (Settings > Properties > "Internal name"): lower-case
# letters, digits and underscores.
_PROPERTY_NAME = re.compile(r"[a-z0-9_]{1,100}")


class HubSpot(_Strict):
    """`[hubspot]`: which HubSpot company properties `stallwatch sync hubspot` reads (the sync
    runs only with HUBSPOT_TOKEN set). All optional, so older files stay valid."""

    # The company property holding our account id; a company without it is matched to an
    # existing account by its domain (when match_by_domain), else skipped.
    account_id_property: str = "stallwatch_account_id"
    match_by_domain: StrictBool = True
    # ARR in dollars a year. Not `annualrevenue`: that is the company's own revenue (its size).
    arr_property: str = "arr"
    # Read when arr_property is empty on a company; "" reads nothing else.
    arr_fallback_property: str = "amount"
    renewal_date_property: str = "renewal_date"
    # Minutes between two scheduled syncs (leader only).
    interval_minutes: Minutes = 15
    # A note on the HubSpot company for each recovery email sent and each alert resolved.
    notes: StrictBool = False

    @field_validator("account_id_property", "arr_property", "renewal_date_property", mode="before")
    @classmethod
    def _property_name(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError("must be a string (a HubSpot property's internal name)")
        if not _PROPERTY_NAME.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not a HubSpot internal property name "
                             "(lower-case letters, digits and _, like \"arr\")")
        return value

    @field_validator("arr_fallback_property", mode="before")
    @classmethod
    def _optional_property_name(cls, value: object) -> object:
        if isinstance(value, str) and value == "":
            return value
        return cls._property_name(value)


class Rules(_Strict):
    version: Literal[1] = 1
    journey: Journey
    tracks: Tracks = Tracks()
    stall_rules: StallRules = StallRules()
    scoring: Scoring = Scoring()
    priorities: Priorities = Priorities()
    routing: Routing = Routing()
    digest: Digest = Digest()
    schema_: dict[str, list[str]] = Field(default_factory=dict, alias="schema")
    outreach: Outreach = Outreach()
    tracking: Tracking = Tracking()
    health: Health = Health()
    hubspot: HubSpot = HubSpot()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def required_properties(self, event: str) -> list[str]:
        return self.schema_.get(event, [])

    def journey_fingerprint(self) -> str:
        """What journey state depends on; when it changes, stored journey state is recomputed."""
        steps = ";".join(f"{s.event}={s.stall_after_hours}" for s in self.journey.steps)
        fingerprint = f"{steps}|{self.journey.activation_event}|{self.journey.checkpoint_days}"
        overrides = [(t, self.tracks.settings(t).thresholds) for t in TRACKS]
        # Only files with track thresholds get a longer fingerprint: stored state of older
        # files stays current.
        extra = ";".join(f"{t}={th.stall_after_hours},{th.checkpoint_days}" for t, th in overrides
                         if th.stall_after_hours is not None or th.checkpoint_days is not None)
        return f"{fingerprint}|{extra}" if extra else fingerprint


@dataclass(frozen=True)
class RuleProblem:
    """One located problem in a rules file."""

    source: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class RulesError(ValueError):
    def __init__(self, problems: list[RuleProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def parse_rules(text: str, source: str = "rules.toml") -> Rules:
    """Parse and validate rules TOML; raise `RulesError` listing every located problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
        raise RulesError([RuleProblem(source, "", f"not valid TOML: {exc}", line)]) from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise RulesError([RuleProblem(source, "", "not valid TOML: values nested too deeply")]) from None
    try:
        return Rules.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            path = _key_path(err["loc"])
            problems.append(RuleProblem(source, path or "(top level)", _message(err), _find_line(text, err["loc"])))
        raise RulesError(problems) from None


def _message(err: dict) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] == "extra_forbidden":
        return "unknown key (check the spelling against the packaged default rules)"
    if err["type"] == "missing":
        return "required key is missing"
    return msg


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            name = "schema" if item == "schema_" else str(item)
            parts.append(("." if parts else "") + name)
    return "".join(parts)


def _line_from_message(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


# A table header line, `[a.b]` or `[[a.b]]` (not a line of a multi-line array like `["x"],`).
_ANY_HEADER = re.compile(r"^\s*\[\[?[^\[\]=]+\]\]?\s*(#.*)?$")


def _find_line(text: str, loc: tuple) -> int | None:
    """Best-effort line of the deepest key of `loc` that appears in the text.

    Walks the key path through table headers (`[a.b]`, `[[a.b]]`, counting array entries)
    and `key =` lines, so `journey.steps[2].stall_after_hours` points at the line inside the
    third `[[journey.steps]]` table. A key is only looked for inside its own table (up to the
    next header): a key missing from the third step must point at that step's header, not
    at the same key in the fourth step.
    """
    lines = text.splitlines()
    names = ["schema" if p == "schema_" else p for p in loc]
    best: int | None = None
    body = 0  # index of the first line of the current table's body (0: the root table)
    table: list[str] = []
    i = 0
    while i < len(names):
        name = names[i]
        if isinstance(name, int):
            i += 1
            continue
        table.append(str(name))
        dotted = ".".join(table)
        nxt = names[i + 1] if i + 1 < len(names) else None
        found = None
        if isinstance(nxt, int):
            header = re.compile(r"^\s*\[\[\s*" + re.escape(dotted) + r"\s*\]\]")
            hits = [n for n in range(body, len(lines)) if header.match(lines[n])]
            if nxt < len(hits):
                found = hits[nxt]
                i += 1  # the array index is consumed with its header
        if found is None:
            found = _key_line(lines, body, str(name))
        if found is None:
            header = re.compile(r"^\s*\[\s*" + re.escape(dotted) + r"\s*\]")
            found = next((n for n in range(body, len(lines)) if header.match(lines[n])), None)
        if found is not None:
            body = found + 1
            best = found + 1
        i += 1
    return best


def _key_line(lines: list[str], body: int, name: str) -> int | None:
    """The `name = ...` line in the table whose body starts at `body`, if any."""
    key = re.compile(r"^\s*[\"']?" + re.escape(name) + r"[\"']?\s*=")
    for n in range(body, len(lines)):
        if _ANY_HEADER.match(lines[n]):
            return None
        if key.match(lines[n]):
            return n
    return None
