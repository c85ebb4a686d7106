"""Pure presentation of update PRs: list entries, the coloured lock diff, the detail text.

Builds :class:`rich.text.Text` from data — never markup strings — so PR titles, commit
subjects and lock URLs (which can contain ``[`` … ``]``) are shown literally.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text

from nfu_tui.models import CIVerdict, UpdatePR
from nfu_tui.ui.fleetview import ago

CI_LABELS: dict[CIVerdict, tuple[str, str]] = {
    CIVerdict.GREEN: ("✓ CI green", "green"),
    CIVerdict.RED: ("✗ CI failing", "red"),
    CIVerdict.PENDING: ("⟳ CI running", "blue"),
    CIVerdict.NO_CI: ("– no CI", "yellow"),
    CIVerdict.UNKNOWN: ("? CI unknown", "dim"),
}

MERGEABLE_LABELS: dict[str, tuple[str, str]] = {
    "clean": ("mergeable", "green"),
    "has_hooks": ("mergeable", "green"),
    "unstable": ("mergeable (checks not green)", "yellow"),
    "blocked": ("blocked", "red"),
    "behind": ("behind base", "yellow"),
    "dirty": ("conflicts", "red"),
    "draft": ("draft", "yellow"),
    "unknown": ("mergeability unknown", "dim"),
}


def ci_label(pr: UpdatePR) -> tuple[str, str]:
    return CI_LABELS[pr.ci.verdict] if pr.ci else ("… CI", "dim")


def mergeable_label(pr: UpdatePR) -> tuple[str, str]:
    if pr.mergeable is False and pr.mergeable_state not in ("dirty", "blocked", "behind", "draft"):
        return ("not mergeable", "red")
    return MERGEABLE_LABELS.get(pr.mergeable_state, (pr.mergeable_state, "dim"))


def lock_only_label(pr: UpdatePR) -> tuple[str, str]:
    lock_only = pr.lock_only
    if lock_only is None:
        return ("files …", "dim")
    return ("lock-only", "green") if lock_only else ("touches more than flake.lock", "yellow")


def pr_entry(pr: UpdatePR, now: datetime) -> Text:
    """Two lines for the PR list: number, title, age; CI, mergeable, lock-only, author."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"#{pr.number} ", style="bold")
    text.append(pr.title, style="dim" if pr.superseded_by else "")
    if pr.created_at is not None:
        text.append(f"  {ago(pr.created_at, now)} ago", style="dim")
    text.append("\n  ")
    if pr.superseded_by:
        text.append(f"superseded by #{pr.superseded_by}", style="dim italic")
        text.append(" · ", style="dim")
    parts = [ci_label(pr), mergeable_label(pr), lock_only_label(pr), (pr.author, "dim")]
    if pr.draft:
        parts.insert(0, ("draft", "yellow"))
    for i, (label, style) in enumerate(parts):
        if i:
            text.append(" · ", style="dim")
        text.append(label, style=style)
    return text


def colour_summary(summary: str) -> Text:
    """Colour nix's lock-file summary: headings bold, old refs red, new refs green."""
    text = Text()
    for line in summary.splitlines():
        stripped = line.lstrip()
        if line.startswith("• Added"):
            style = "bold green"
        elif line.startswith("• Removed"):
            style = "bold red"
        elif line.startswith("•"):
            style = "bold"
        elif stripped.startswith("→"):
            style = "green"
        elif stripped.startswith("'"):
            style = "red"
        else:
            style = "dim"
        text.append(line, style=style)
        text.append("\n")
    text.rstrip()
    return text


def _changelog_lines(changelog: Any, limit: int) -> list[str]:
    if changelog is None:
        return []
    return list(changelog.lines(limit))


def changelog_style(line: str) -> str:
    if line.startswith("⚠"):
        return "bold red"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    return ""


def pr_detail(state: Any, now: datetime, *, changelog_limit: int = 40) -> Text:
    """The focused PR: title, URL, headline, lock diff, changelog; loading and errors in place.

    ``state`` is a ``PRState`` of the service (``pr``, ``explanation``, ``loading``, ``error``).
    """
    pr: UpdatePR = state.pr
    text = Text()
    text.append(f"#{pr.number} {pr.title}\n", style="bold")
    text.append(pr.html_url + "\n", style="underline dim")
    meta = [ci_label(pr), mergeable_label(pr), lock_only_label(pr), (f"by {pr.author}", "dim")]
    if pr.created_at is not None:
        meta.append((f"opened {ago(pr.created_at, now)} ago", "dim"))
    for i, (label, style) in enumerate(meta):
        if i:
            text.append(" · ", style="dim")
        text.append(label, style=style)
    text.append("\n")
    if pr.ci and pr.ci.summary:
        text.append(pr.ci.summary + "\n", style="dim")
    if pr.superseded_by:
        text.append(f"Superseded by #{pr.superseded_by}; deploy the newest update PR.\n", style="yellow")
    text.append("\n")
    expl = state.explanation
    if state.error:
        text.append("Could not load this PR: ", style="bold red")
        text.append(state.error + "\n")
    if expl is None:
        if state.loading:
            text.append("Loading the lock diff and changelog…\n", style="italic dim")
        elif not state.error:
            text.append("No lock diff yet.\n", style="dim")
        text.rstrip()
        return text
    headline = getattr(expl, "nixpkgs_headline", None) or getattr(expl, "headline", None)
    if headline:
        text.append(headline + "\n", style="bold")
    summary = getattr(expl, "summary_text", "") or ""
    text.append("\nLock diff\n", style="bold underline")
    if summary.strip():
        text.append_text(colour_summary(summary))
        text.append("\n")
    else:
        text.append("flake.lock did not change.\n", style="dim")
    lines = _changelog_lines(getattr(expl, "changelog", None), changelog_limit)
    text.append("\nChangelog (nixpkgs)\n", style="bold underline")
    if lines:
        for line in lines:
            text.append(line + "\n", style=changelog_style(line))
    else:
        text.append("No package-level changes found.\n", style="dim")
    for err in getattr(expl, "errors", None) or []:
        text.append("⚠ ", style="yellow")
        text.append(str(err) + "\n", style="yellow")
    if state.loading:
        text.append("Refreshing…\n", style="italic dim")
    text.rstrip()
    return text
