"""Typed errors of nfu-tui.

Every error carries a short ``title`` and a human ``message`` that is safe to show:
both (and the ``hint``) pass :func:`nfu_tui.sanitize.sanitize_text` when the
error is made, so a server's error body that echoes a token, password or cookie, or
holds invalid UTF-8 or escape sequences, is redacted and made valid here, once.
Clients map transport/protocol failures to these at their edge; the UI and the CLI
never see httpx or websockets exceptions.
"""

from __future__ import annotations

from nfu_tui.sanitize import sanitize_text


class NfuError(Exception):
    """Base class: ``title`` for a toast/heading, ``message`` for the details."""

    title = "Error"

    def __init__(self, message: str, *, title: str | None = None, hint: str = "") -> None:
        message = sanitize_text(message)
        super().__init__(message)
        self.message = message
        if title is not None:
            self.title = sanitize_text(title)
        self.hint = sanitize_text(hint)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(NfuError):
    title = "Configuration error"


class StateError(NfuError):
    title = "State error"


class LockFileError(NfuError):
    """A flake.lock that cannot be parsed (not JSON, wrong version, broken nodes)."""

    title = "Invalid flake.lock"


# --- GitHub -----------------------------------------------------------------


class GitHubError(NfuError):
    title = "GitHub error"

    def __init__(self, message: str, *, status: int | None = None, request_id: str = "", **kw) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.request_id = request_id


class GitHubAuthError(GitHubError):
    title = "GitHub authentication failed"


class GitHubForbidden(GitHubError):
    title = "GitHub refused the request"


class GitHubNotFound(GitHubError):
    title = "Not found on GitHub"


class GitHubRateLimited(GitHubError):
    title = "GitHub rate limit"

    def __init__(self, message: str, *, wait_seconds: float, **kw) -> None:
        super().__init__(message, **kw)
        self.wait_seconds = wait_seconds


class GitHubServerError(GitHubError):
    title = "GitHub server error"


class GitHubUnavailable(GitHubError):
    """Network-level failure: DNS, refused connection, timeout."""

    title = "GitHub unreachable"


class MergeConflict(GitHubError):
    """409: the head moved since it was reviewed (sha guard)."""

    title = "PR changed since it was reviewed"


class NotMergeable(GitHubError):
    """405: GitHub will not merge now (conflicts, required checks, reviews…)."""

    title = "PR cannot be merged"

    @property
    def transient(self) -> bool:
        return "base branch was modified" in self.message.lower()


class ValidationFailed(GitHubError):
    title = "GitHub rejected the request"


class GraphQLError(GitHubError):
    title = "GitHub GraphQL error"


# --- Dashboard --------------------------------------------------------------


class DashboardError(NfuError):
    title = "Dashboard error"

    def __init__(self, message: str, *, status: int | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.status = status


class DashboardUnavailable(DashboardError):
    title = "Dashboard unreachable"


class LoginFailed(DashboardError):
    title = "Dashboard login failed"

    def __init__(self, message: str, *, needs_totp: bool = False, rate_limited: bool = False, **kw) -> None:
        super().__init__(message, **kw)
        self.needs_totp = needs_totp
        self.rate_limited = rate_limited


class SessionExpired(DashboardError):
    title = "Dashboard session expired"


class CsrfRejected(DashboardError):
    title = "Dashboard refused the CSRF token"


class CommandBlocked(DashboardError):
    """The dashboard refused to start an op on a host (validation code, §6.2)."""

    title = "Command blocked"

    def __init__(self, message: str, *, host_id: str, code: str, **kw) -> None:
        super().__init__(message, **kw)
        self.host_id = host_id
        self.code = code


class DeployLocked(NfuError):
    """Another process holds the deploy lock."""

    title = "Another deploy is running"
