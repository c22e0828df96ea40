"""Which alert events reach the pager: the lifecycle's events, with suppression applied.

The lifecycle decides when an alert fires and resolves; the `Announcer` decides whether
that is *announced* (published as an event), from what suppresses the alert
(`monitor.engine.suppress`):

- a firing alert that is suppressed when it fires is not announced (`announced` False
  on its event and its alert); it keeps its state and metrics, and its retained topic
  says what suppresses it;
- a resolve is announced exactly when the firing was: a pager that was told of the
  firing must be told it is over, even while the alert is suppressed now, and one that
  never heard of it must hear nothing;
- `refresh`, at every tick, follows the suppression of every firing alert: an
  unannounced alert no longer suppressed is announced then (a firing event made
  now, `starts_at` when it began), and a change of what suppresses an alert is a
  retained update (no event).

One delay, for the end of an inhibition: when a venue comes back, its `VenueDown`
resolves at the first account that answers while the others are still stale until
their next poll; announcing their `AccountDataStale` then would page once per account
for data that is about to be fresh. So an alert whose inhibition ended is announced
only if it still fires once its account has had `SETTLE_POLLS` polls end since
(`polls_of`): one answer resolves a stale account at once, while a poll in flight
when the venue came back, or one that lost its deadline to the venue's Retry-After,
still fails (seen with 500 accounts); three failures in a row after the outage are
the account's own. Venue-wide alerts (no account polls) and the end of a silence (an
operator's decision) are announced at once.

Pure: time, the silences and the poll counts are passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from monitor.engine.lifecycle import Alert, AlertBook, AlertEvent, firing_event
from monitor.engine.suppress import (
    NOT_SUPPRESSED,
    InhibitRule,
    Silence,
    Suppression,
    suppression_of,
    suppressions,
)

__all__ = ["SETTLE_POLLS", "Announcer", "Refresh"]

#: Polls of its account that must end, after an alert's inhibition ended, before it is
#: announced if it still fires (see the module docstring).
SETTLE_POLLS = 3

#: (venue, account) -> how many polls of the account have ended so far; None for a
#: venue-wide alert or an account no poller holds.
PollsOf = Callable[[str, str], int | None]


@dataclasses.dataclass(slots=True)
class Refresh:
    """What `Announcer.refresh` found: events to publish (late announcements) and the
    firing alerts whose retained message must change (their suppression changed)."""

    events: list[AlertEvent] = dataclasses.field(default_factory=list)
    retained: list[Alert] = dataclasses.field(default_factory=list)


class Announcer:
    def __init__(
        self,
        inhibit_rules: Callable[[], Sequence[InhibitRule]],
        silences: Callable[[], Sequence[Silence]],
        polls_of: PollsOf,
    ) -> None:
        self._inhibit_rules = inhibit_rules
        self._silences = silences
        self._polls_of = polls_of
        #: fingerprint -> the account's poll count when the alert's inhibition ended
        self._waiting: dict[str, int] = {}

    def _suppressions(self, book: AlertBook, now: float) -> dict[str, Suppression]:
        return suppressions(book.firing(), self._inhibit_rules(), self._silences(), now)

    def filter(self, events: Iterable[AlertEvent], book: AlertBook, now: float) -> list[AlertEvent]:
        """The lifecycle's events, each marked announced or not (and with what
        suppresses its alert); the firing alerts in `book` are marked the same way."""
        out: list[AlertEvent] = []
        for event in events:
            if event.status == "resolved":
                self._waiting.pop(event.fingerprint, None)
                out.append(event)
                continue
            alert = book.get(event.rule_key, event.venue, event.account)
            if alert is None:  # resolved within the same batch: the lifecycle's word
                out.append(event)
                continue
            why = suppression_of(alert, book.active(), self._inhibit_rules(), self._silences(), now)
            alert.inhibited_by, alert.silenced_by = why.inhibited_by, why.silenced_by
            alert.announced = not why
            out.append(
                dataclasses.replace(
                    event,
                    announced=alert.announced,
                    inhibited_by=why.inhibited_by,
                    silenced_by=why.silenced_by,
                )
            )
        return out

    def refresh(self, book: AlertBook, now: float) -> Refresh:
        """Follow the suppression of every firing alert (see the module docstring)."""
        result = Refresh()
        firing = book.firing()
        if not firing:
            self._waiting.clear()
            return result
        found = self._suppressions(book, now)
        live: set[str] = set()
        for alert in firing:
            fp = alert.fingerprint
            live.add(fp)
            why = found.get(fp, NOT_SUPPRESSED)
            was_inhibited = bool(alert.inhibited_by)
            changed = (why.inhibited_by, why.silenced_by) != (
                alert.inhibited_by,
                alert.silenced_by,
            )
            alert.inhibited_by, alert.silenced_by = why.inhibited_by, why.silenced_by
            if why or alert.announced:
                self._waiting.pop(fp, None)
                if changed:
                    result.retained.append(alert)
                continue
            if self._settling(alert, was_inhibited):
                if changed:
                    result.retained.append(alert)
                continue
            alert.announced = True
            result.events.append(firing_event(alert, now))
        for fp in list(self._waiting):
            if fp not in live:
                del self._waiting[fp]
        return result

    def _settling(self, alert: Alert, was_inhibited: bool) -> bool:
        """Whether an unannounced alert, no longer suppressed, waits for its account's
        next poll before it is announced (its inhibition just ended)."""
        fp = alert.fingerprint
        since = self._waiting.get(fp)
        if since is None and not was_inhibited:
            return False
        polls = self._polls_of(alert.venue, alert.account)
        if polls is None:
            self._waiting.pop(fp, None)
            return False
        if since is None:
            self._waiting[fp] = polls
            return True
        if polls - since < SETTLE_POLLS:
            return True
        del self._waiting[fp]
        return False
