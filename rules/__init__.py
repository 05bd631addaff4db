"""Pure domain logic: journeys, stall rules, scoring. No I/O, no clock: every function that
depends on time takes `now`."""
