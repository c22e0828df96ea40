"""Named errors for everything that can go wrong talking to a venue.

Errors are values with names: adapters raise them, the poller catches them where it can
act (retry, count, mark stale, raise VenueAuthFailed), and nothing else needs to know
about HTTP status codes or wire formats.
"""

from __future__ import annotations


class VenueError(Exception):
    """A poll of a venue failed. `retryable` says whether trying again can help."""

    retryable: bool = False
    outcome: str = "error"  # the `outcome` label of riskmon_polls_total

    def __init__(
        self,
        message: str,
        *,
        venue: str | None = None,
        account: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.venue = venue
        self.account = account
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status})")
        if self.request_id:
            parts.append(f"[request_id {self.request_id}]")
        return " ".join(parts)


class VenueAuthError(VenueError):
    """401/403: the credentials are wrong or lack permission; never hot-retried."""

    outcome = "auth_failed"
    #: `digest_of` the credential that was refused, when the adapter knows which it was.
    credential_digest: str | None = None


class VenueRateLimited(VenueError):
    """429: slow down; `retry_after` holds the venue's hint when it sent one."""

    retryable = True
    outcome = "rate_limited"


class VenueUnavailable(VenueError):
    """5xx or 408: the venue is failing; worth another try."""

    retryable = True
    outcome = "unavailable"


class VenueConnectionError(VenueError):
    """The connection failed, dropped or timed out before a full answer arrived."""

    retryable = True
    outcome = "connection_error"


class VenueRequestError(VenueError):
    """The venue refused the request (400, 404, 409, 422 ...)."""

    outcome = "rejected"


class AccountNotFound(VenueRequestError):
    """404 for an account: a typo in the config, or an account that was closed."""

    outcome = "not_found"


class SnapshotParseError(VenueError):
    """The answer arrived but is malformed, truncated, oversized or wrongly typed."""

    outcome = "bad_response"


class PollDeadlineExceeded(VenueError):
    """The poll ran out of time (its deadline passed) before an answer arrived."""

    outcome = "timeout"
