"""Pure presentation of update PRs: list entries, the coloured lock diff, the detail text.

Builds :class:`rich.text.Text` from data — never markup strings — so PR titles, commit
subjects and lock URLs (which can contain ``[`` … ``]``) are shown literally.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.style import Style
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


DIFF_STYLES = {"added": "bold green", "removed": "bold red", "updated": "bold yellow", "old": "red", "new": "green",
               "plain": "dim"}


def colour_summary(summary: str) -> Text:
    """Colour nix's lock-file summary like a diff: headings bold, old refs red, new refs green.

    Line kinds come from :func:`nfu_tui.core.history.classify_diff` (an added input's only
    edge is new, not old), shared with the history screen.
    """
    from nfu_tui.core.history import classify_diff

    text = Text()
    for kind, line in classify_diff(summary):
        text.append(line, style=DIFF_STYLES[kind])
        text.append("\n")
    text.rstrip()
    return text


class Folded:
    """Text whose lines are cut at the width (not word-wrapped) with a hanging indent.

    Word wrapping tears a lock diff apart (``→`` alone on a line, the URL below it);
    folding keeps every line's start where nix puts it and continues long URLs indented.
    """

    def __init__(self, text: Text, indent: int = 6) -> None:
        self.text = text
        self.indent = indent

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width, self.indent + 10)
        for line in self.text.split("\n", allow_blank=True):
            chunk, rest = line[:width], line[width:]
            yield chunk
            step = width - self.indent
            while rest.plain:
                piece = Text(" " * self.indent)
                piece.append_text(rest[:step])
                yield piece
                rest = rest[step:]

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        longest = max((len(line) for line in self.text.plain.split("\n")), default=0)
        return Measurement(min(longest, self.indent + 10), longest)


def changelog_style(line: str) -> str:
    if line.startswith("⚠"):
        return "bold red"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    return ""


def pr_detail(state: Any, now: datetime, *, changelog_limit: int = 40) -> Group:
    """The focused PR: title, URL, headline, lock diff, changelog; loading and errors in place.

    ``state`` is a ``PRState`` of the service (``pr``, ``explanation``, ``loading``, ``error``).
    """
    pr: UpdatePR = state.pr
    head = [Text(f"#{pr.number} {pr.title}", style="bold"), link(pr.html_url)]
    text = Text()
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
        return Group(*head, text)
    headline = expl.nixpkgs_headline or expl.headline
    if headline:
        text.append(headline + "\n", style="bold")
    lines = list(expl.changelog.lines(changelog_limit)) if expl.changelog is not None else []
    text.append("\nChangelog (nixpkgs, security first)\n", style="bold underline")
    if lines:
        for line in lines:
            text.append(line + "\n", style=changelog_style(line))
    else:
        text.append("No package-level changes found.\n", style="dim")
    for err in expl.errors:
        text.append("⚠ ", style="yellow")
        text.append(str(err) + "\n", style="yellow")
    text.append("\nLock diff", style="bold underline")
    parts: list[Any] = [*head, text]
    summary = expl.summary_text or ""
    if summary.strip():
        parts.append(Folded(colour_summary(summary)))
    else:
        text.append("\nflake.lock did not change.", style="dim")
    compares = compare_lines(expl.compares)
    if compares:
        parts.append(Text("\nCompare on GitHub", style="bold underline"))
        parts.extend(compares)
    if state.loading:
        parts.append(Text("\nRefreshing…", style="italic dim"))
    return Group(*parts)


def link(url: str, indent: int = 0) -> Text:
    """``url`` as a terminal hyperlink on a line of its own, never wrapped: a narrow pane cuts
    it with an ellipsis, and the link still opens (and copies) the whole URL."""
    text = Text(" " * indent, no_wrap=True, overflow="ellipsis")
    text.append(url, style=Style(underline=True, dim=True, link=url))
    return text


def compare_lines(compares: Any) -> list[Text]:
    """Per compare target: the inputs it explains, ``owner/repo abc1234…def5678 · 180 commits``,
    then the compare URL as a link (see :func:`link`)."""
    lines: list[Text] = []
    for result in compares or ():
        target = result.target
        text = Text()
        text.append(", ".join(target.path_names) or target.slug, style="bold")
        text.append(f" {target.slug} {target.old_rev[:7]}…{target.new_rev[:7]}", style="dim")
        if result.comparison is not None:
            n = result.comparison.total_commits
            text.append(f" · {n:,} commit{'' if n == 1 else 's'}", style="dim")
        elif result.error:
            text.append(f" · {result.error}", style="yellow")
        lines += [text, link(target.url, indent=2)]
    return lines
