"""Pure presentation logic of the TUI: rows, glyphs, ages, sorting, filtering, batching, log tails."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from nfu_tui.domain import timeparse
from nfu_tui.models import CIStatus, CIVerdict, Host, StatusCheck, UpdatePR
from nfu_tui.models import CompartmentState as S
from nfu_tui.ui import fleetview as fv
from nfu_tui.ui import prview
from nfu_tui.ui.fleetview import HostFilter, HostMeta, Progress, SortMode
from nfu_tui.ui.messages import EventBatcher
from nfu_tui.ui.widgets.log_view import appended

NOW = datetime(2026, 5, 17, 12, 0, 0, tzinfo=timezone.utc)
OK = StatusCheck(S.OK, "fine")


def host(name: str, **kw) -> Host:
    base = dict(
        id=name, hostname=name, status="online", agent_version="3.1.5", git=OK, lock=OK, system=OK, tests=OK,
        device_type="server", location="home",
    )
    base.update(kw)
    return Host(**base)


def text_of(runs: list[fv.Run]) -> str:
    return "".join(t for t, _ in runs)


# --- time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2025-12-28T14:30:05Z", datetime(2025, 12, 28, 14, 30, 5, tzinfo=timezone.utc)),
        ("2025-12-28T14:30:05.123456789Z", datetime(2025, 12, 28, 14, 30, 5, 123456, tzinfo=timezone.utc)),
        ("2025-12-28T15:30:05+01:00", datetime(2025, 12, 28, 14, 30, 5, tzinfo=timezone.utc)),
        ("2025-12-28 14:30:05", datetime(2025, 12, 28, 14, 30, 5, tzinfo=timezone.utc)),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_parse_time_is_lenient(value, expected):
    """The grid reads times through the domain's parser (no copy of it in the UI)."""
    assert fv.parse_time is timeparse.parse_time
    assert timeparse.parse_time(value) == expected


@pytest.mark.parametrize(
    "delta, expected",
    [(2, "now"), (42, "42s"), (60 * 5 + 3, "5m"), (3600 * 3, "3h"), (86400 * 2, "2d"), (86400 * 20, "2w")],
)
def test_ago(delta, expected):
    assert fv.ago(NOW - timedelta(seconds=delta), NOW) == expected
    assert fv.ago(None, NOW) == "?"


# --- rows -------------------------------------------------------------------------


@pytest.mark.parametrize("width", [60, 79, 80, 97, 119, 159, 240])
def test_rows_fill_exactly_the_width_they_are_laid_out_for(width):
    cols = fv.layout(width)
    expected = sum(c.width for c in cols) + len(cols) - 1
    assert expected <= max(width, 60)
    h = host("a-very-long-hostname-that-does-not-fit", pending_command="switch")
    meta = HostMeta(held=True, selected=True, canary=True, priority=3, auto_update=False)
    runs = fv.row_runs(h, meta, cols, now=NOW, progress=Progress("switch", 3, 4), pending_lock=True, cursor=True)
    assert cell_len(text_of(runs)) == expected
    assert cell_len(text_of(fv.header_runs(cols))) == expected


def test_wider_terminals_get_more_columns():
    narrow = {c.key for c in fv.layout(79)}
    wide = {c.key for c in fv.layout(159)}
    assert {"mark", "name", "cells", "conn", "cmd", "badges"} <= narrow
    assert "kind" not in narrow and {"kind", "gen", "agent"} <= wide


def test_every_compartment_state_has_a_glyph_and_style():
    states = [S.OK, S.OUTDATED, S.ERROR, S.WORKING, S.UNKNOWN]
    checks = [StatusCheck(s, "") for s in states]
    h = host("x", agent_version="", git=checks[1], lock=checks[2], system=checks[3], tests=checks[4])
    runs = fv.cell_runs(h, pending_lock=False)
    assert [t for t, _ in runs] == [" ? ", " ↑ ", " ✗ ", " ⟳ ", " ? "]
    assert [s for _, s in runs] == ["unknown", "outdated", "error", "working", "unknown"]
    glyphs = set(fv.STATE_GLYPHS.values())
    assert len(glyphs) == len(S)  # no two states share a glyph: readable without colour
    from nfu_tui.ui.widgets.host_grid import STYLE_NAMES

    assert {s.value for s in S} <= set(STYLE_NAMES)  # and each has its grid style
    unreachable = host("y", agent_check=StatusCheck(S.UNREACHABLE, "y unreachable: Connection refused"))
    assert fv.cell_runs(unreachable, pending_lock=False)[0] == (" ⊘ ", "unreachable")


def test_pending_update_marks_an_ok_lock_cell_but_never_hides_a_problem():
    runs = fv.cell_runs(host("x"), pending_lock=True)
    assert runs[2] == (f" {fv.PENDING_GLYPH} ", "pending")
    assert all(style == "ok" for _, style in runs[:2] + runs[3:])
    broken = host("y", lock=StatusCheck(S.ERROR, "Remote version missing lockHash"))
    assert fv.cell_runs(broken, pending_lock=True)[2] == (" ✗ ", "error")


def test_row_shows_name_connection_command_and_badges():
    cols = fv.layout(120)
    runs = fv.row_runs(
        host("gpc0", pending_command="switch", device_type="gaming"),
        HostMeta(held=True, selected=True, canary=True, priority=1, auto_update=False),
        cols,
        now=NOW,
        progress=Progress("switch", 2, 4),
        cursor=True,
    )
    text = text_of(runs)
    assert text.startswith("▶◆ gpc0")
    assert "● online" in text and "gaming/home" in text
    assert "switch 2/4 ▰" in text
    assert "HOLD canary p1 no-auto" in text
    assert ("HOLD", "held") in runs


def test_offline_host_shows_how_long_ago_it_was_seen():
    h = host("hsb8", status="offline", last_seen=(NOW - timedelta(hours=3)).isoformat())
    assert fv.conn_text(h, NOW) == ("○ 3h ago", "offline")
    assert fv.conn_text(host("y", status="offline"), NOW) == ("○ offline", "offline")
    assert fv.conn_text(host("x", status="unknown"), NOW)[0] == "◌ unknown"


def test_fit_crops_with_an_ellipsis_and_pads():
    assert fv.fit("abcdef", 4) == "abc…"
    assert fv.fit("ab", 4) == "ab  "
    assert fv.fit("x", 0) == ""


def test_progress_text_drops_the_bar_when_narrow():
    assert fv.progress_text(Progress("pull", 1, 4), "pull", 30).startswith("pull 1/4 ▰")
    assert fv.progress_text(Progress("pull", 1, 4), "pull", 9) == "pull 1/4"
    assert fv.progress_text(None, "switch", 20) == "switch"
    assert fv.progress_text(None, "", 20) == ""


@pytest.mark.parametrize("width", [80, 160])
def test_cell_positions_and_compartment_at_agree(width):
    cols = fv.layout(width)
    names = ["agent", "git", "lock", "system", "tests"]
    assert [fv.compartment_at(cols, fv.cell_x(cols, n) + 1) for n in names] == names
    assert fv.compartment_at(cols, 0) is None
    row = "".join(t for t, _ in fv.row_runs(host("x"), HostMeta(), cols, now=NOW, pending_lock=True))
    assert row[fv.cell_x(cols, "lock") : fv.cell_x(cols, "lock") + 3] == f" {fv.PENDING_GLYPH} "


# --- sorting and filtering --------------------------------------------------------------


def test_sort_by_status_puts_errors_then_busy_then_offline_first():
    hosts = [
        host("a"),
        host("b", system=StatusCheck(S.ERROR, "boom")),
        host("c", status="offline"),
        host("d", pending_command="pull"),
        host("e", lock=StatusCheck(S.OUTDATED, "")),
    ]
    ordered = sorted(hosts, key=lambda h: fv.sort_key(SortMode.STATUS, h, HostMeta()))
    assert [h.id for h in ordered] == ["b", "d", "c", "e", "a"]


def test_sort_by_priority_is_canary_then_priority_then_name():
    metas = {"a": HostMeta(), "b": HostMeta(priority=2), "c": HostMeta(canary=True), "d": HostMeta(priority=1)}
    ordered = sorted(metas, key=lambda n: fv.sort_key(SortMode.PRIORITY, host(n), metas[n]))
    assert ordered == ["c", "d", "b", "a"]
    assert SortMode.NAME.next() is SortMode.STATUS and SortMode.PRIORITY.next() is SortMode.NAME


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", {"gpc0", "hsb1", "web-01", "mac"}),
        ("hsb", {"hsb1"}),
        ("cloud", {"web-01"}),
        ("offline", {"hsb1"}),
        ("!offline", {"gpc0", "web-01", "mac"}),
        ("held", {"gpc0"}),
        ("lock:outdated", {"web-01"}),
        ("outdated", {"web-01"}),
        ("error", {"mac"}),
        ("home online", {"gpc0", "mac"}),
        ("macos", {"mac"}),
        ("canary", {"web-01"}),
        ("no-auto", {"hsb1"}),
        ("GPC", {"gpc0"}),
    ],
)
def test_filter(query, expected):
    hosts = {
        "gpc0": (host("gpc0", device_type="gaming"), HostMeta(held=True)),
        "hsb1": (host("hsb1", status="offline"), HostMeta(auto_update=False)),
        "web-01": (host("web-01", location="cloud", lock=StatusCheck(S.OUTDATED, "")), HostMeta(canary=True)),
        "mac": (host("mac", host_type="macos", device_type="laptop", tests=StatusCheck(S.ERROR, "")), HostMeta()),
    }
    f = HostFilter.parse(query)
    assert f.active == bool(query)
    assert {n for n, (h, m) in hosts.items() if f.matches(h, m)} == expected


# --- batching -------------------------------------------------------------------------------


def ev(kind, ids=(), payload=None):
    return SimpleNamespace(kind=kind, host_ids=frozenset(ids), payload=payload)


def test_batcher_coalesces_host_updates_but_keeps_every_deploy_event():
    b = EventBatcher()
    assert b.empty
    for i in range(500):
        b.add(ev("fleet", {f"h{i % 50}"}))
    b.add(ev("deploy", payload=1))
    b.add(ev("deploy", payload=2))
    b.add(ev("output", {"h1"}))
    b.add(ev("output", {"h1", "h2"}))
    b.add(ev("notify", payload="n"))
    b.add(ev("status"))
    update = b.take()
    assert len(update.hosts) == 50 and not update.all_hosts
    assert update.deploy == (1, 2)
    assert update.output == {"h1", "h2"}
    assert update.notifications == ("n",) and update.status and not update.prs
    assert b.empty and b.events == 506
    b.add(ev("fleet", {"x"}))
    b.add(ev("fleet"))  # everything changed (resync)
    update = b.take()
    assert update.all_hosts and update.hosts == frozenset() and update.fleet


# --- log tails ----------------------------------------------------------------------------


def test_appended_finds_new_lines_in_a_growing_and_in_a_rotating_buffer():
    assert appended([], ["a", "b"]) == ["a", "b"]
    assert appended(["a", "b"], ["a", "b", "c"]) == ["c"]
    assert appended(["a", "b"], ["a", "b"]) == []
    # bounded to 4: "a" and "b" fell out, "e" and "f" came in
    assert appended(["a", "b", "c", "d"], ["c", "d", "e", "f"]) == ["e", "f"]
    # more new lines than the buffer holds: cannot line up
    assert appended(["a", "b", "c", "d"], ["w", "x", "y", "z"]) is None
    assert appended(["a"], []) is None


# --- PR presentation ---------------------------------------------------------------------


def pr(**kw) -> UpdatePR:
    base = dict(
        number=42, title="flake.lock: Update [bold]x[/bold]", author="github-actions[bot]",
        html_url="https://github.com/alice/nixcfg/pull/42", head_ref="update_flake_lock_action",
        head_sha="a" * 40, base_ref="main", base_sha="b" * 40, created_at=NOW - timedelta(hours=20),
        files=("flake.lock",), mergeable=True, mergeable_state="clean", ci=CIStatus(CIVerdict.GREEN, "3/3 passed"),
    )
    base.update(kw)
    return UpdatePR(**base)


def test_pr_entry_is_literal_text_with_the_facts():
    text = prview.pr_entry(pr(), NOW)
    plain = text.plain
    assert "#42 flake.lock: Update [bold]x[/bold]" in plain  # markup shown literally
    assert "20h ago" in plain and "✓ CI green" in plain and "mergeable" in plain and "lock-only" in plain
    assert "github-actions[bot]" in plain
    other = prview.pr_entry(pr(files=("flake.lock", "flake.nix"), ci=None, superseded_by=43), NOW).plain
    assert "touches more than flake.lock" in other and "superseded by #43" in other


def test_lock_summary_is_coloured_by_line_kind():
    summary = (
        "• Updated input 'nixpkgs':\n"
        "    'github:NixOS/nixpkgs/abc1234' (2026-05-10)\n"
        "  → 'github:NixOS/nixpkgs/def5678' (2026-05-17)\n"
        "• Added input 'foo':\n"
        "    'github:a/foo/1234567' (2026-05-17)\n"
        "• Removed input 'bar'\n"
    )
    text = prview.colour_summary(summary)
    assert text.plain == summary.rstrip("\n")
    styles = {text.plain[s.start : s.end].split("\n")[0]: str(s.style) for s in text.spans}
    assert styles["• Updated input 'nixpkgs':"] == "bold yellow"
    assert styles["  → 'github:NixOS/nixpkgs/def5678' (2026-05-17)"] == "green"
    assert styles["    'github:NixOS/nixpkgs/abc1234' (2026-05-10)"] == "red"
    assert styles["• Added input 'foo':"] == "bold green"
    assert styles["    'github:a/foo/1234567' (2026-05-17)"] == "green"  # an added input's edge is new, not old
    assert styles["• Removed input 'bar'"] == "bold red"


def test_pr_detail_shows_loading_errors_and_explanation_in_place():
    loading = SimpleNamespace(pr=pr(), explanation=None, loading=True, error="")
    assert "Loading the lock diff" in render_plain(prview.pr_detail(loading, NOW))
    failed = SimpleNamespace(pr=pr(), explanation=None, loading=False, error="GitHub unreachable")
    assert "Could not load this PR: GitHub unreachable" in render_plain(prview.pr_detail(failed, NOW))
    changelog = SimpleNamespace(lines=lambda limit: ["⚠ openssl 3.0.14 → 3.0.15 (CVE-2026-1234)", "+ foo 1.0 (new)"][:limit])
    url = "https://github.com/NixOS/nixpkgs/compare/" + "a" * 40 + "..." + "b" * 40
    url2 = "https://github.com/NixOS/nixpkgs/compare/" + "c" * 40 + "..." + "d" * 40
    target = SimpleNamespace(slug="NixOS/nixpkgs", old_rev="a" * 40, new_rev="b" * 40, url=url, path_names=("nixpkgs",))
    hm = SimpleNamespace(slug="NixOS/nixpkgs", old_rev="c" * 40, new_rev="d" * 40, url=url2,
                         path_names=("home-manager/nixpkgs",))
    expl = SimpleNamespace(
        headline="nixpkgs aaaaaaa → bbbbbbb (+7 days)",
        compares=[SimpleNamespace(target=target, comparison=SimpleNamespace(total_commits=180), error=""),
                  SimpleNamespace(target=hm, comparison=SimpleNamespace(total_commits=1), error="")],
        nixpkgs_headline="nixpkgs abc1234 → def5678, 180 commits over 7 days",
        summary_text="• Updated input 'nixpkgs':\n    'a' (1)\n  → 'b' (2)\n",
        changelog=changelog,
        errors=["compare of x/y failed"],
    )
    ready = SimpleNamespace(pr=pr(), explanation=expl, loading=False, error="")
    plain = render_plain(prview.pr_detail(ready, NOW), 60)
    order = ["nixpkgs abc1234 → def5678, 180 commits over 7 days", "⚠ openssl", "+ foo 1.0", "Lock diff", "→ 'b' (2)"]
    assert [plain.index(part) for part in order] == sorted(plain.index(part) for part in order)
    assert "https://github.com/alice/nixcfg/pull/42" in plain and "compare of x/y failed" in plain
    assert "nixpkgs NixOS/nixpkgs aaaaaaa…bbbbbbb · 180 commits" in plain  # the input each compare explains
    wide = render_plain(prview.pr_detail(ready, NOW), 100)
    assert "home-manager/nixpkgs NixOS/nixpkgs ccccccc…ddddddd · 1 commit\n" in wide
    # URLs are terminal hyperlinks on a line of their own: cut at the pane's edge, never wrapped mid-URL
    lines = plain.splitlines()
    url_lines = [line for line in lines if "https://github.com/NixOS/nixpkgs/compare/" in line]
    assert len(url_lines) == 2 and all(line.endswith("…") for line in url_lines)
    links = {seg.style.link for seg in Console(width=60).render(prview.pr_detail(ready, NOW)) if seg.style and seg.style.link}
    assert links == {url, url2, "https://github.com/alice/nixcfg/pull/42"}


def test_folded_lines_keep_their_start_and_continue_indented():
    text = Text("  → 'https://example.org/" + "x" * 50 + "' (2026-05-17)\nshort")
    lines = render_plain(prview.Folded(text, indent=6), 30).splitlines()
    assert lines[0] == "  → 'https://example.org/xxxxx"
    assert all(line.startswith("      ") for line in lines[1:-1])
    assert "".join(line[6:] if i else line for i, line in enumerate(lines[:-1])) == text.plain.splitlines()[0]
    assert lines[-1] == "short"


def render_plain(renderable, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def test_hosts_are_unknown_while_the_dashboard_is_unreachable() -> None:
    since = NOW - timedelta(minutes=2)
    h = host("x", last_seen=(NOW - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert fv.conn_text(h, NOW) == ("● online", "online")
    assert fv.conn_text(h, NOW, since) == ("◌ unknown", "offline")
    seen = (NOW - timedelta(minutes=3)).astimezone().strftime("%H:%M")
    assert fv.last_seen_live(h, since) == f"last seen live {seen}"
    assert fv.last_seen_live(host("y"), since) == f"last seen live {since.astimezone().strftime('%H:%M')}"
    cols = fv.layout(100)
    row = "".join(t for t, _ in fv.row_runs(h, HostMeta(), cols, now=NOW, unreachable_since=since))
    assert "◌ unknown" in row and "● online" not in row
