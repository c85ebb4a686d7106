"""History and audit: records from the journal, the JSON document and text of `nfu-tui history`,
the lock-diff colouring, the context recorder, and the Textual history screen."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nfu_tui.cli import main
from nfu_tui.config import Config
from nfu_tui.core import history as hist
from nfu_tui.core.engine import RunStarted
from nfu_tui.core.plan import make_plan
from nfu_tui.core.store import DB_NAME, Store
from nfu_tui.models import Host, UpdatePR
from nfu_tui.paths import state_dir

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "flake-lock-updates"
HEAD = "a" * 40
MERGE = "b" * 40
LOCK_DIFF = (
    "• Updated input 'nixpkgs':\n"
    "    'github:NixOS/nixpkgs/00c21e4' (2026-02-04)\n"
    "  → 'github:NixOS/nixpkgs/a82ccc3' (2026-02-13)\n"
    "• Added input 'tokstat':\n"
    "    'github:pbek/tokstat/7e8753e' (2026-02-14)\n"
    "• Removed input 'old'\n"
)


def journal(store: Store) -> dict[str, int]:
    """A failed automatic deploy of PR #42, its revert with a redeploy, a per-host rollback, and audits."""
    hosts = [Host("gpc0", device_type="gaming", status="online"), Host("hsb0", device_type="server", status="online")]
    plan = make_plan(hosts, Config(), set(), automatic=True, pr_number=42, head_sha=HEAD)
    deploy = store.create_run("deploy", actor="root@fleet", trigger="auto", pr=42, head_sha=HEAD, plan=plan.to_dict())
    store.record(deploy, "context", title="flake.lock: Update", lock_diff=LOCK_DIFF,
                 headline="nixpkgs 00c21e4 → a82ccc3 (+9 days)", head_sha=HEAD)
    store.record(deploy, "merge_requested", pr=42, sha=HEAD)
    store.record(deploy, "merged", sha=MERGE)
    store.record(deploy, "host_started", host="gpc0", phase="pull", force=True)
    store.record(deploy, "host_finished", host="gpc0", outcome="ok", phase="switch", detail="", log_excerpt=[])
    store.record(deploy, "host_finished", host="hsb0", outcome="failed", phase="switch",
                 detail="switch error (exit 1): command failed", log_excerpt=["building...", "error: builder failed"])
    store.finish_run(deploy, "failed", "PR #42: failed (1 ok, 1 failed)")
    store.audit("merge", actor="root@fleet", github_login="alice", pr=42, details={"run": deploy, "merge_sha": MERGE})
    revert = store.create_run("revert", actor="root@fleet", trigger="auto", pr=42, plan={
        "strategy": "revert-commit", "failed_run": deploy, "reverts_pr": 42, "reverts_merge_sha": MERGE,
        "hosts": ["gpc0"], "failed_hosts": {"hsb0": "switch: command failed"}})
    store.record(revert, "revert_opened", revert_pr=43, head_sha="c" * 40, url="u")
    redeploy = store.create_run("deploy", actor="root@fleet", trigger="auto", pr=43, head_sha="c" * 40)
    store.record(revert, "redeploy_started", run=redeploy)
    store.record(redeploy, "revert_redeploy", parent=revert)
    store.finish_run(redeploy, "succeeded", "PR #43: succeeded (1 ok)")
    store.finish_run(revert, "succeeded", "reverted PR #42 with PR #43")
    rollback = store.create_run("rollback", actor="bob@laptop", plan={"op": "rollback", "hosts": ["hsb0"]})
    store.record(rollback, "host_finished", host="hsb0", outcome="ok", phase="rollback", detail="rolled back")
    store.finish_run(rollback, "succeeded", "hsb0: rollback succeeded")
    store.audit("hold", actor="bob@laptop", details={"hosts": ["hsb0"]})
    store.audit("automation", actor="bob@laptop", details={"enabled": False, "source": "tui"})
    return {"deploy": deploy, "revert": revert, "redeploy": redeploy, "rollback": rollback}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "journal.sqlite3")
    yield s
    s.close()


def test_records_tell_when_who_what_and_how_each_host_fared(store: Store) -> None:
    ids = journal(store)
    h = hist.load_history(store)
    assert [r.id for r in h.runs] == [ids["rollback"], ids["redeploy"], ids["revert"], ids["deploy"]]
    runs = {r.id: r for r in h.runs}
    d = runs[ids["deploy"]]
    assert (d.kind, d.pr, d.title, d.trigger, d.actor, d.github_login, d.status) == (
        "deploy", 42, "flake.lock: Update", "auto", "root@fleet", "alice", "failed")
    assert (d.head_sha, d.merge_sha, d.lock_diff, d.headline) == (HEAD, MERGE, LOCK_DIFF,
                                                                  "nixpkgs 00c21e4 → a82ccc3 (+9 days)")
    assert d.plan[0].startswith("Plan for PR #42 (head aaaaaaa): merge, then deploy 2 host(s)")
    assert [(x.host, x.outcome, x.phase) for x in d.hosts] == [("gpc0", "ok", "switch"), ("hsb0", "failed", "switch")]
    assert d.hosts[1].log_excerpt == ("building...", "error: builder failed")
    assert d.hosts_line() == "1 failed, 1 ok"
    assert [t.text for t in d.timeline] == [
        "about: flake.lock: Update — nixpkgs 00c21e4 → a82ccc3 (+9 days)", "merge requested (head aaaaaaa)",
        "merged as bbbbbbb", "gpc0 pull started (force)", "gpc0 ok",
        "hsb0 failed (switch) — switch error (exit 1): command failed"]
    r = runs[ids["revert"]]
    assert r.what() == "revert of PR #42" and r.related_runs == (ids["deploy"], ids["redeploy"])
    assert r.plan == ("Strategy revert-commit: revert PR #42 (merge bbbbbbb) after run #1 failed",
                      "Failed: hsb0 (switch: command failed)", "Roll back (pull + switch at the revert): gpc0")
    assert runs[ids["redeploy"]].related_runs == (ids["revert"],)
    assert runs[ids["rollback"]].what() == "rollback hsb0" and runs[ids["rollback"]].github_login is None
    assert [a.action for a in h.audit] == ["automation", "hold", "merge"]


def test_json_document(store: Store) -> None:
    ids = journal(store)
    doc = json.loads(json.dumps(hist.history_json(hist.load_history(store, 2))))
    assert doc["schema"] == "nfu-tui.history/1" and len(doc["runs"]) == 2 and len(doc["audit"]) == 2
    assert [r["id"] for r in doc["runs"]] == [ids["rollback"], ids["redeploy"]]
    full = hist.run_json(hist.record_of(store.get_run(ids["deploy"]), store.audit_entries()))
    assert set(full) == {"id", "kind", "pr", "title", "trigger", "actor", "github_login", "status", "started_at",
                         "finished_at", "head_sha", "merge_sha", "summary", "headline", "lock_diff", "plan", "hosts",
                         "related_runs", "timeline", "origin"}
    assert full["origin"] is None  # a run of this journal (not another client's, from GitHub)
    assert full["hosts"][1] == {"host": "hsb0", "outcome": "failed", "phase": "switch",
                                "detail": "switch error (exit 1): command failed",
                                "log_excerpt": ["building...", "error: builder failed"],
                                # keys added by the truthful outcomes (a journal from before: a failure was proven)
                                "executed": "", "reached": None, "verified": None, "proven": True}
    assert full["timeline"][2]["step"] == "merged" and full["timeline"][2]["at"].endswith("+00:00")


def test_text_output(store: Store) -> None:
    ids = journal(store)
    text = "\n".join(hist.format_history(hist.load_history(store)))
    assert f'#{ids["deploy"]} deploy PR #42 "flake.lock: Update" — failed (auto)' in text
    assert "by root@fleet (GitHub alice)" in text
    assert "✗ hsb0 failed (switch): switch error (exit 1): command failed" in text
    assert "│ error: builder failed" in text
    assert "Audit trail (newest first):" in text and "merge PR #42  root@fleet (alice)  merge sha bbbbbbb · run #1" in text
    assert "hold  bob@laptop  hosts: hsb0" in text and "enabled no · source tui" in text  # for people, not reprs
    detail = "\n".join(hist.format_run(hist.record_of(store.get_run(ids["deploy"])), details=True))
    assert "lock diff:" in detail and "→ 'github:NixOS/nixpkgs/a82ccc3'" in detail and "timeline:" in detail


def test_diff_lines_are_classified_like_a_diff() -> None:
    kinds = [kind for kind, _ in hist.classify_diff(LOCK_DIFF)]
    assert kinds == ["updated", "old", "new", "added", "new", "removed"]


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not present at {FIXTURES}")
def test_diff_classification_on_real_nix_summaries() -> None:
    for summary in sorted(FIXTURES.glob("*/nix-summary.txt")):
        body = summary.read_text().split("Flake lock file updates:\n\n", 1)[1]
        classified = hist.classify_diff(body)
        assert all(kind != "plain" for kind, _ in classified), summary
        updated = sum(1 for kind, _ in classified if kind == "updated")
        arrows = sum(1 for kind, line in classified if kind == "new" and line.lstrip().startswith("→"))
        assert updated == arrows, summary


def test_the_screen_colours_the_lock_diff() -> None:
    from nfu_tui.ui.screens.history import diff_text

    text = diff_text(LOCK_DIFF)
    styled = {text.plain[span.start:span.end].strip(): str(span.style) for span in text.spans}
    assert styled["• Updated input 'nixpkgs':"] == "bold yellow"
    assert styled["'github:NixOS/nixpkgs/00c21e4' (2026-02-04)"] == "red"
    assert styled["→ 'github:NixOS/nixpkgs/a82ccc3' (2026-02-13)"] == "green"
    assert styled["'github:pbek/tokstat/7e8753e' (2026-02-14)"] == "green"
    assert styled["• Removed input 'old'"] == "bold red"


# ================================================================== recorder


class FakeService:
    def __init__(self, store: Store, pr_state: Any = None, github: Any = None) -> None:
        self.store, self.github, self._state = store, github, pr_state
        self.listeners: list[Any] = []

    def subscribe(self, callback: Any) -> Any:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    def pr_state(self, number: int) -> Any:
        return self._state

    def emit(self, payload: Any) -> Any:
        return [cb(SimpleNamespace(kind="deploy", payload=payload)) for cb in self.listeners]


def pr(**kw: Any) -> UpdatePR:
    base = dict(number=42, title="flake.lock: Update", author="bot", html_url="https://x/pull/42", head_ref="u",
                head_sha=HEAD, base_ref="main", base_sha="e" * 40, files=("flake.lock",))
    base.update(kw)
    return UpdatePR(**base)


def test_recorder_journals_the_explained_lock_diff(store: Store) -> None:
    explanation = SimpleNamespace(summary_text=LOCK_DIFF, headline="nixpkgs 00c21e4 → a82ccc3", nixpkgs_headline="")
    service = FakeService(store, SimpleNamespace(pr=pr(), explanation=explanation))
    unsubscribe = hist.attach_recorder(service)
    run_id = store.create_run("deploy", actor="t", pr=42, head_sha=HEAD)
    service.emit(RunStarted(run_id=run_id, pr_number=42, head_sha=HEAD, hosts=("gpc0",)))
    service.emit(RunStarted(run_id=run_id, pr_number=42, head_sha=HEAD, hosts=("gpc0",), resumed=True))
    (step,) = store.get_run(run_id).steps
    assert step.step == "context" and step.data["lock_diff"] == LOCK_DIFF and step.data["title"] == "flake.lock: Update"
    unsubscribe()
    assert service.listeners == []


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not present at {FIXTURES}")
async def test_recorder_computes_the_diff_when_the_pr_was_not_explained(store: Store) -> None:
    fixture = sorted(FIXTURES.iterdir())[1]

    class GitHub:
        async def get_pull(self, number: int, *, wait_mergeable: bool = True) -> UpdatePR:
            return pr(number=number, title='Revert "flake.lock: Update"')

        async def file_at(self, path: str, ref: str) -> bytes:
            return (fixture / ("before.lock" if ref == "e" * 40 else "after.lock")).read_bytes()

    service = FakeService(store, None, GitHub())
    hist.attach_recorder(service)
    run_id = store.create_run("deploy", actor="t", pr=43, head_sha=HEAD)
    (pending,) = service.emit(RunStarted(run_id=run_id, pr_number=43, head_sha=HEAD, hosts=()))
    await pending
    (step,) = store.get_run(run_id).steps
    expected = (fixture / "nix-summary.txt").read_text().split("Flake lock file updates:\n\n", 1)[1]
    assert step.data["title"] == 'Revert "flake.lock: Update"'
    assert step.data["lock_diff"].rstrip("\n") == expected.rstrip("\n")


# ======================================================================= CLI


def test_cli_json_text_and_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    db = state_dir() / DB_NAME
    db.parent.mkdir(parents=True, exist_ok=True)
    with Store(db) as s:
        ids = journal(s)
    assert main(["history", "--json", "--limit", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nfu-tui.history/1" and len(doc["runs"]) == 3
    assert main(["history"]) == 0
    out = capsys.readouterr().out
    assert "✗ hsb0 failed (switch)" in out and "Audit trail" in out
    assert main(["history", "--run", str(ids["deploy"])]) == 0
    out = capsys.readouterr().out
    assert "plan:" in out and "lock diff:" in out and "timeline:" in out
    assert main(["history", "--run", str(ids["deploy"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == ids["deploy"]
    assert main(["history", "--run", "999"]) == 2
    assert "no run 999" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse: usage + one line, exit 2
        main(["history", "--limit", "0"])
    assert refused.value.code == 2 and "--limit" in capsys.readouterr().err


def test_cli_on_an_empty_state_dir_creates_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == []
    assert main(["history"]) == 0
    assert "No runs in the journal yet." in capsys.readouterr().out
    assert not (state_dir() / DB_NAME).exists()


# ==================================================================== screen


async def test_history_screen_lists_runs_and_opens_one(store: Store) -> None:
    from textual.app import App
    from textual.widgets import DataTable, Static

    from nfu_tui.ui.screens.history import HistoryScreen, RunDetailScreen

    ids = journal(store)

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(HistoryScreen(store))

    app = Host()
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        await screen.workers.wait_for_complete()
        await pilot.pause()
        runs = screen.query_one("#history-runs", DataTable)
        assert runs.row_count == 4 and screen.query_one("#history-audit", DataTable).row_count == 3
        runs.move_cursor(row=3)  # the oldest: the failed deploy
        await pilot.press("enter")
        await pilot.pause()
        detail = app.screen
        assert isinstance(detail, RunDetailScreen) and detail.record.id == ids["deploy"]
        assert detail.query_one("#run-lock-diff", Static) is not None
        shown = app.export_screenshot()
        for fragment in ("deploy&#160;PR&#160;#42", "error:&#160;builder&#160;failed", "Timeline", "Plan&#160;for&#160;PR"):
            assert fragment in shown, fragment
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HistoryScreen)


def test_a_run_waiting_for_offline_hosts_says_so(tmp_path) -> None:
    from nfu_tui.core.history import record_of
    from nfu_tui.core.store import Store

    with Store(tmp_path / "db.sqlite3") as store:
        run_id = store.create_run("deploy", actor="alice@box", pr=42)
        assert record_of(store.get_run(run_id)).status == "running"
        store.record(run_id, "waiting", hosts=["hsb8"])
        assert record_of(store.get_run(run_id)).status == "waiting"
        store.record(run_id, "host_finished", host="gpc0", outcome="ok", phase="switch")
        record = record_of(store.get_run(run_id))
        assert [(h.host, h.outcome) for h in record.hosts] == [("hsb8", "queued"), ("gpc0", "ok")]
        text = "\n".join(hist.format_run(record, details=False))
        assert "hosts: 1 ok, 1 queued" in text and "◌ queued (offline, deployed when back online): hsb8" in text
        store.record(run_id, "host_finished", host="hsb8", outcome="ok", phase="switch")  # resumed later
        assert {h.host: h.outcome for h in record_of(store.get_run(run_id)).hosts} == {"gpc0": "ok", "hsb8": "ok"}


def test_audit_details_are_written_for_people() -> None:
    details = {"outcomes": {"csb0": "ok", "csb1": "ok", "hsb0": "failed"}, "hosts": ["hsb1", "hsb2"], "run": 7,
               "enabled": True, "merge_sha": MERGE, "note": None}
    assert hist.audit_details(details) == (
        "enabled yes · hosts: hsb1, hsb2 · merge sha bbbbbbb · outcomes: ok csb0, csb1; failed hsb0 · run #7")


async def test_history_screens_have_the_header_and_keep_the_lock_diffs_indent_at_80_columns(store: Store) -> None:
    from textual.app import App

    from nfu_tui.ui.screens.history import HistoryScreen, RunDetailScreen
    from nfu_tui.ui.widgets.header import StatusHeader

    long_ref = "    'github:NixOS/nixpkgs/" + "0" * 40 + "?narHash=sha256-" + "x" * 44 + "' (2026-02-04)\n"
    run_id = store.create_run("deploy", actor="alice@box", pr=42)
    store.record(run_id, "context", title="flake.lock: Update", lock_diff="• Updated input 'nixpkgs':\n" + long_ref)

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(HistoryScreen(store))

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        await app.screen.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen.query_one(StatusHeader).content.plain.startswith(" nfu-tui ")
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunDetailScreen) and screen.query_one(StatusHeader).region.y == 0
        diff = screen.query_one("#run-lock-diff")
        lines = [strip.text for strip in diff.render_lines(diff.region.reset_offset)]
        body = [line for line in lines[2:] if line.strip()]  # after the title and the input line
        assert len(body) >= 2 and all(line.startswith("    ") for line in body), lines
