"""Build the GitHub client and the fleet backend from the configuration and the resolved secrets (one place
for every caller)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nfu_tui.backends.base import FleetBackend
    from nfu_tui.clients.github import GitHubClient
    from nfu_tui.config import Config, Secrets


def github_client(cfg: Config, secrets: Secrets) -> GitHubClient:
    """The GitHub client for ``github.repo`` (read token for polling, merge token for writes)."""
    from nfu_tui.clients.github import GitHubClient
    from nfu_tui.paths import cache_dir

    gh = cfg.github
    return GitHubClient(
        api_url=gh.api_url,
        repo=gh.repo,
        token=secrets.github_token,
        write_token=secrets.merge_token,
        graphql_url=gh.graphql_endpoint,
        cache_dir=cache_dir() / "github",
        labels=gh.labels,
        title_patterns=gh.title_patterns,
        update_branch=gh.update_branch,
        fork_repos=gh.fork_repos,
        required_checks=gh.required_checks,
    )


def fleet_backend(cfg: Config, secrets: Secrets, *, insecure: bool = False) -> FleetBackend:
    """The fleet backend ``fleet.backend`` names: the NixFleet dashboard client (raises DashboardError for a
    plain-http non-loopback URL unless insecure) or the SSH backend (asks GitHub for the default branch head)."""
    if cfg.uses_ssh:
        from nfu_tui.backends.ssh import SshFleet

        return SshFleet.from_config(cfg, github=github_client(cfg, secrets) if cfg.github.repo else None)
    from nfu_tui.clients.dashboard import DashboardClient

    return DashboardClient(
        url=cfg.dashboard.url,
        password=secrets.dashboard_password,
        totp_secret=secrets.totp_secret,
        insecure=insecure or cfg.dashboard.insecure,
    )
