"""Converge: which hosts are behind the default branch's head, and by what.

After a cancelled or failed run (or with hosts that were offline) the update PR is
merged, yet part of the fleet still runs an older commit. A converge run deploys the
default branch's head to exactly those hosts, without a merge (see
:func:`nfu_tui.core.plan.make_plan` with ``lag``).

A host is *behind* when its generation (the 7-char HEAD the agent reports) is not the
head. GitHub's ``compare`` (one request per distinct generation, at most
:data:`MAX_COMPARES`) says by how many commits, and whether the host is rather *ahead*
of the branch (a test branch: left alone). A generation GitHub does not know — the
host pulls from a mirror whose commit ids differ — is judged by the dashboard's own
comparison against its published remote state (``version.json``): Git and Lock ``ok``
is current, either ``outdated`` is behind, anything else cannot be told (skipped).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from nfu_tui.backends.base import NIXFLEET, BackendInfo
from nfu_tui.core.plan import HostLag
from nfu_tui.errors import GitHubError, GitHubNotFound
from nfu_tui.models import CompartmentState, Host

log = logging.getLogger(__name__)

MAX_COMPARES = 20
"""Distinct generations compared on GitHub per plan; beyond, hosts are "behind" without a count."""


def _commits(n: int) -> str:
    return f"{n} commit{'s' if n != 1 else ''}"


def lag_from_compare(generation: str, target: str, branch: str, comparison: Any) -> HostLag:
    """The lag of a host at ``generation`` from ``compare/{generation}...{target}`` (status, ahead_by, behind_by)."""
    gen, head = generation[:7], target[:7]
    status = str(comparison.status)
    if status == "identical":
        return HostLag(False, f"at {branch} {head}")
    if status == "ahead":  # the target is ahead of the host
        return HostLag(True, f"{gen} → {head}, {_commits(comparison.ahead_by)} behind")
    if status == "behind":  # the host has commits the branch has not: a test branch
        return HostLag(False, f"{gen} is ahead of {branch} {head} by {_commits(comparison.behind_by)}: left alone")
    if status == "diverged":
        return HostLag(True, f"{gen} → {head}, {_commits(comparison.ahead_by)} behind "
                             f"({_commits(comparison.behind_by)} of {gen} are not on {branch})")
    return HostLag(True, f"{gen} → {head}")


def lag_from_compartments(host: Host, branch: str, backend: BackendInfo = NIXFLEET) -> HostLag:
    """A host whose commit GitHub does not know (a mirror): the backend's Git/Lock (the dashboard's: against
    version.json)."""
    noun = backend.noun
    gen = host.generation[:7]
    git, lock = host.git.state, host.lock.state
    where = f"{gen} is not a commit of the repository (a mirror?)"
    if git is CompartmentState.OK and lock is CompartmentState.OK:
        return HostLag(False, f"{where}; {noun} reports Git and Lock ok against its published remote state")
    if CompartmentState.OUTDATED in (git, lock):
        said = host.git.message if git is CompartmentState.OUTDATED else host.lock.message
        return HostLag(True, f"{where}; behind {noun}'s published remote state ({said or 'outdated'})")
    return HostLag(None, f"cannot tell: {where} and {noun}'s Git is {git.value}, Lock {lock.value}")


async def fleet_lag(github: Any, hosts: Iterable[Host], *, branch: str = "",
                    backend: BackendInfo = NIXFLEET) -> tuple[str, str, dict[str, HostLag]]:
    """(branch, its head sha, lag per host id) — the input of a converge plan.

    ``github`` needs ``default_branch()``, ``branch_head(branch)`` and
    ``commits_between(base, head)`` (:class:`~nfu_tui.clients.github.GitHubClient`).
    Raises GitHubError when the branch head cannot be read (no plan without a target).
    """
    branch = branch or await github.default_branch()
    target = await github.branch_head(branch)
    by_generation: dict[str, HostLag | None] = {}  # None: GitHub does not know the commit
    lags: dict[str, HostLag] = {}
    for host in hosts:
        gen = host.generation.strip().lower()
        if not gen:
            lags[host.id] = HostLag(None, "cannot tell: the host reported no generation")
            continue
        if target.lower().startswith(gen[:7]):
            lags[host.id] = HostLag(False, f"at {branch} {target[:7]}")
            continue
        if gen not in by_generation:
            by_generation[gen] = await _compare(github, gen, target, branch, len(by_generation))
        lag = by_generation[gen]
        lags[host.id] = lag if lag is not None else lag_from_compartments(host, branch, backend)
    return branch, target, lags


async def _compare(github: Any, gen: str, target: str, branch: str, done: int) -> HostLag | None:
    if done >= MAX_COMPARES:
        return HostLag(True, f"{gen[:7]} → {target[:7]}")
    try:
        return lag_from_compare(gen, target, branch, await github.commits_between(gen, target))
    except GitHubNotFound:
        return None
    except GitHubError as exc:  # not at the head; how far behind is unknown
        log.info("compare %s...%s failed: %s", gen, target, exc)
        return HostLag(True, f"{gen[:7]} → {target[:7]}")


__all__ = ["MAX_COMPARES", "fleet_lag", "lag_from_compare", "lag_from_compartments"]
