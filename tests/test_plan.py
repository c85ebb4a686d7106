"""Unit tests of the pure deploy planner (nfu_tui.core.plan)."""

from __future__ import annotations

import json
import random

import pytest

from nfu_tui.config import Config
from nfu_tui.core.plan import DeployPlan, SkipReason, Tier, make_plan, natural_key, tier_of
from nfu_tui.models import Host


def host(name: str, device: str = "server", location: str = "home", *, online: bool = True, **kw) -> Host:
    return Host(id=name, hostname=name, device_type=device, location=location,
                status="online" if online else "offline", **kw)


def config(strategy: str = "all", max_parallel: int = 1, canary_wait: float = 10, **hosts: dict) -> Config:
    return Config.model_validate({
        "flake_updates": {"automation": {"deploy_strategy": strategy, "max_parallel": max_parallel,
                                         "canary_wait_minutes": canary_wait}},
        "hosts": hosts,
    })


FLEET = [
    host("web-01", "server", "cloud"),
    host("hsb1", "server", "home"),
    host("gpc0", "gaming", "home"),
    host("mbp-work", "laptop", "work", host_type="macos"),
    host("hsb0", "server", "home"),
    host("wsb0", "server", "work"),
    host("imac0", "desktop", "home", host_type="macos"),
    host("csb0", "server", "cloud"),
    host("mystery", "", ""),
]


def order(plan: DeployPlan) -> list[str]:
    return [e.host for e in plan.entries]


# --- tiering -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "location", "host_type", "tier"),
    [
        ("desktop", "home", "nixos", Tier.WORKSTATION),
        ("laptop", "work", "nixos", Tier.WORKSTATION),
        ("gaming", "home", "nixos", Tier.WORKSTATION),
        ("Desktop", "HOME", "nixos", Tier.WORKSTATION),
        ("", "work", "macos", Tier.WORKSTATION),
        ("server", "home", "nixos", Tier.HOME_SERVER),
        ("server", "work", "nixos", Tier.WORK_SERVER),
        ("server", "office", "nixos", Tier.WORK_SERVER),
        ("server", "cloud", "nixos", Tier.CLOUD_SERVER),
        ("server", "", "nixos", Tier.OTHER),
        ("server", "basement", "nixos", Tier.OTHER),
        ("server", "cloud", "macos", Tier.CLOUD_SERVER),
        ("", "", "nixos", Tier.OTHER),
        ("toaster", "cloud", "nixos", Tier.CLOUD_SERVER),
    ],
)
def test_tier_of(device: str, location: str, host_type: str, tier: Tier) -> None:
    assert tier_of(host("x", device, location, host_type=host_type)) is tier


def test_natural_key_orders_numbers_numerically() -> None:
    names = ["hsb10", "hsb2", "Hsb1", "hsb1", "a", "hsb"]
    assert sorted(names, key=natural_key) == ["a", "hsb", "Hsb1", "hsb1", "hsb2", "hsb10"]


# --- ordering --------------------------------------------------------------------


def test_default_order_is_tiered_then_by_name() -> None:
    plan = make_plan(FLEET, config(), set())
    assert order(plan) == ["gpc0", "imac0", "mbp-work", "hsb0", "hsb1", "wsb0", "mystery", "csb0", "web-01"]
    assert all(e.wave == 1 and not e.canary for e in plan.entries)
    assert plan.waves == ((), plan.entries)
    assert plan.entry("hsb0").reason == "home server"


def test_canaries_first_then_priority_then_tier() -> None:
    cfg = config(**{"csb0": {"canary": True}, "hsb1": {"canary": True, "priority": 9},
                    "web-01": {"priority": 1}, "imac0": {"priority": 5}})
    plan = make_plan(FLEET, cfg, set())
    assert order(plan) == ["hsb1", "csb0", "web-01", "imac0", "gpc0", "mbp-work", "hsb0", "wsb0", "mystery"]
    canaries, rest = plan.waves
    assert [e.host for e in canaries] == ["hsb1", "csb0"]
    assert canaries[0].reason == "canary" and rest[0].reason == "priority 1"
    assert [e.host for e in rest][:2] == ["web-01", "imac0"]


def test_priority_zero_counts_as_explicit() -> None:
    cfg = config(**{"web-01": {"priority": 0}, "csb0": {"priority": 3}})
    assert order(make_plan(FLEET, cfg, set()))[:2] == ["web-01", "csb0"]


def test_overrides_from_the_ui_win_over_config() -> None:
    cfg = config(**{"gpc0": {"canary": True}})
    plan = make_plan(FLEET, cfg, set(), overrides={"gpc0": {"canary": False}, "web-01": {"canary": True},
                                                   "hsb1": {"priority": 2, "bogus": 1}, "csb0": {"priority": "x"}})
    assert order(plan)[:2] == ["web-01", "hsb1"]
    assert plan.entry("gpc0").canary is False
    assert plan.entry("csb0").priority is None


def test_order_is_independent_of_input_order() -> None:
    cfg = config(**{"hsb0": {"canary": True}, "wsb0": {"priority": 4}})
    expected = order(make_plan(FLEET, cfg, set()))
    rng = random.Random(3)
    for _ in range(20):
        shuffled = FLEET[:]
        rng.shuffle(shuffled)
        assert order(make_plan(shuffled, cfg, set())) == expected


# --- exclusions ----------------------------------------------------------------


def reasons(plan: DeployPlan) -> dict[str, SkipReason]:
    return {s.host: s.reason for s in plan.skipped}


def test_held_hosts_are_skipped() -> None:
    plan = make_plan(FLEET, config(), {"hsb0", "gpc0"})
    assert "hsb0" not in order(plan) and "gpc0" not in order(plan)
    assert reasons(plan) == {"hsb0": SkipReason.HELD, "gpc0": SkipReason.HELD}


def test_auto_update_false_only_excluded_for_automatic_runs() -> None:
    cfg = config(**{"web-01": {"auto_update": False}})
    manual = make_plan(FLEET, cfg, set())
    assert "web-01" in order(manual)
    assert "manual only" in manual.entry("web-01").badges
    auto = make_plan(FLEET, cfg, set(), automatic=True)
    assert "web-01" not in order(auto)
    assert reasons(auto) == {"web-01": SkipReason.EXCLUDED}
    assert auto.automatic


def test_held_wins_over_other_reasons() -> None:
    cfg = config(**{"hsb0": {"auto_update": False}})
    fleet = [host("hsb0", online=False)]
    assert reasons(make_plan(fleet, cfg, {"hsb0"}, automatic=True)) == {"hsb0": SkipReason.HELD}


def test_offline_hosts_queued_with_strategy_all() -> None:
    fleet = FLEET + [host("hsb8", online=False), host("csb9", "server", "cloud", online=False)]
    plan = make_plan(fleet, config("all"), set())
    assert [e.host for e in plan.queued] == ["hsb8", "csb9"]
    assert all(e.queued for e in plan.queued)
    assert "hsb8" not in order(plan)
    assert plan.hosts[-2:] == ("hsb8", "csb9")
    assert plan.skipped == ()


def test_offline_hosts_skipped_with_online_only() -> None:
    fleet = FLEET + [host("hsb8", online=False)]
    plan = make_plan(fleet, config("online-only"), set())
    assert plan.queued == ()
    assert reasons(plan) == {"hsb8": SkipReason.OFFLINE}


def test_running_status_counts_as_online() -> None:
    plan = make_plan([Host(id="old", status="running")], config("online-only"), set())
    assert order(plan) == ["old"]


def test_strategy_none_merges_only() -> None:
    plan = make_plan(FLEET + [host("hsb8", online=False)], config("none"), {"hsb0"})
    assert plan.entries == () and plan.queued == () and plan.merge_only
    r = reasons(plan)
    assert r.pop("hsb0") is SkipReason.HELD
    assert set(r.values()) == {SkipReason.MERGE_ONLY}
    assert len(r) == len(FLEET)  # every other host, including the offline one
    assert "no deploy (merge only)" in plan.describe()[0]


def test_offline_canary_warns_and_does_not_gate() -> None:
    fleet = [host("gpc0", "gaming", online=False), host("hsb0")]
    plan = make_plan(fleet, config("all", **{"gpc0": {"canary": True}}), set())
    assert plan.waves[0] == ()
    assert plan.queued[0].host == "gpc0" and plan.queued[0].wave == 1 and plan.queued[0].canary
    assert any("canary gpc0 is offline" in w for w in plan.warnings)
    plan2 = make_plan(fleet, config("online-only", **{"gpc0": {"canary": True}}), set())
    assert any("cannot gate" in w for w in plan2.warnings)


def test_selection_and_unknown_hosts() -> None:
    plan = make_plan(FLEET, config(), set(), targets=["hsb1", "nope", "gpc0", "hsb1", " "])
    assert order(plan) == ["gpc0", "hsb1"]
    r = reasons(plan)
    assert r.pop("nope") is SkipReason.UNKNOWN_HOST
    assert set(r.values()) == {SkipReason.NOT_SELECTED}
    assert set(r) == {h.id for h in FLEET} - {"hsb1", "gpc0"}


def test_configured_hosts_unknown_to_dashboard_reported_for_full_fleet_only() -> None:
    cfg = config(**{"ghost": {"priority": 1}})
    assert reasons(make_plan(FLEET, cfg, set())) == {"ghost": SkipReason.UNKNOWN_HOST}
    assert "ghost" not in reasons(make_plan(FLEET, cfg, set(), targets=["hsb0"]))


def test_busy_and_outdated_badges() -> None:
    fleet = [host("hsb0", pending_command="switch", agent_version="3.0", agent_outdated=True)]
    assert make_plan(fleet, config(), set()).entry("hsb0").badges == ("busy: switch", "agent outdated")


def test_duplicate_host_ids_planned_once() -> None:
    assert order(make_plan([host("a"), host("a", online=False)], config(), set())) == ["a"]


def test_empty_fleet() -> None:
    plan = make_plan([], config(), set())
    assert plan.entries == () and plan.hosts == ()
    assert plan.describe()[-1] == "Nothing to deploy: no host qualifies."


# --- value behaviour ------------------------------------------------------------


def test_plan_carries_pr_and_automation_settings() -> None:
    plan = make_plan(FLEET, config("online-only", max_parallel=3, canary_wait=2.5), set(),
                     pr_number=42, head_sha="abcdef0123456789")
    assert (plan.pr_number, plan.head_sha, plan.strategy, plan.max_parallel, plan.canary_wait_minutes) == (
        42, "abcdef0123456789", "online-only", 3, 2.5)
    with pytest.raises(AttributeError):
        plan.strategy = "all"  # type: ignore[misc]


def test_json_round_trip() -> None:
    cfg = config(**{"hsb0": {"canary": True}, "web-01": {"priority": 2, "auto_update": False}})
    fleet = FLEET + [host("hsb8", online=False)]
    plan = make_plan(fleet, cfg, {"gpc0"}, targets=[h.id for h in fleet if h.id != "csb0"] + ["nope"],
                     pr_number=7, head_sha="f" * 40)
    data = json.loads(json.dumps(plan.to_dict()))
    assert DeployPlan.from_dict(data) == plan


def test_describe_lists_waves_queue_skips_and_warnings() -> None:
    cfg = config(canary_wait=5, **{"gpc0": {"canary": True}, "hsb8": {"canary": True}})
    fleet = [host("gpc0", "gaming"), host("hsb0"), host("hsb8", online=False), host("csb0", "server", "cloud")]
    lines = make_plan(fleet, cfg, {"csb0"}, pr_number=42, head_sha="abcdef0123").describe()
    text = "\n".join(lines)
    assert lines[0].startswith("Plan for PR #42 (head abcdef0): merge, then deploy 2 host(s), 1 queued")
    assert "Wave 1 — canaries (then wait 5 min and require them healthy):" in text
    assert "   1. gpc0 (canary)" in text and "   2. hsb0 (home server)" in text
    assert "Queued (offline" in text and "   - hsb8 (canary)" in text
    assert "   - csb0: held" in text
    assert "Warning: canary hsb8 is offline: it cannot gate this deploy" in text


def test_describe_groups_unselected_hosts() -> None:
    lines = make_plan(FLEET, config(), set(), targets=["hsb0"]).describe()
    assert "Hosts, in order:" in lines
    unselected = [line for line in lines if "not selected" in line]
    assert len(unselected) == 1 and "web-01" in unselected[0]
