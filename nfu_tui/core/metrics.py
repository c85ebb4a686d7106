"""Prometheus metrics of the headless service (``nfu-tui auto --metrics-listen HOST:PORT``).

Two kinds, in one :class:`~prometheus_client.CollectorRegistry` per service:

* **State**, read when scraped (a custom collector): the pending update PR (number, age),
  hosts behind the repository's main branch (Git compartment ``outdated``), held hosts,
  the last deploy run per trigger from the journal (so runs the TUI started count too),
  the GitHub rate budget, the dashboard and GitHub connection states, the automation state.
* **Events** of this process, counted as they happen from the service's "deploy" events
  and the automation's log sink: deploy run and host durations (histograms), finished
  runs by status, failed hosts and rollbacks (counters, reset when the process restarts,
  as Prometheus expects).

Names follow Prometheus conventions: an ``nfu_`` prefix, base units in the name
(``_seconds``), ``_total`` on counters, ``_timestamp_seconds`` for Unix times, and only
bounded labels (``trigger``, ``status``, ``state``, ``outcome``, ``strategy``) whose values
are all pre-created, so a series never appears out of nowhere. Hosts are never a label.

:func:`serve_metrics` serves ``/metrics`` with aiohttp on the service's own event loop (the
collector reads the service and the journal on that loop; no thread touches them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nfu_tui.models import CompartmentState

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464
RUN_TRIGGERS = ("manual", "auto")
RUN_STATUSES = ("running", "paused", "succeeded", "failed", "unknown", "unverified", "cancelled", "abandoned")
FINISHED_STATUSES = ("succeeded", "failed", "unknown", "unverified", "cancelled", "refused", "waiting")  # engine RunStatus values
DASHBOARD_STATES = ("connecting", "live", "reconnecting", "login-required", "error", "disabled")
GITHUB_STATES = ("ok", "polling", "error", "rate-limited", "disabled")
ROLLBACK_STRATEGIES = ("revert-commit", "revert-pr", "alert-only")
HOST_OUTCOMES = ("ok", "failed")
RUN_BUCKETS = (60, 300, 600, 1200, 1800, 3600, 7200, 14400, float("inf"))
HOST_BUCKETS = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, float("inf"))


# ------------------------------------------------------------------ listen address


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``":9464"`` (loopback) → (host, port); ValueError with the reason."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{value!r}: the port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: the port must be between 0 and 65535")
    return host, port


# ------------------------------------------------------------------ the metrics


class FleetMetrics:
    """The metrics of one service (and, when given, its automation runner).

    Feed the automation's sink events to :meth:`on_sink` (rollbacks); the service's
    "deploy" events arrive by subscription. :meth:`render` is the exposition text.
    """

    def __init__(self, service: Any, runner: Any = None, *, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.runner = runner
        self.clock = clock
        disable_created_metrics()  # no *_created series: noise for a single long-running exporter
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.run_duration = Histogram(
            "nfu_deploy_duration_seconds", "Duration of deploy runs of this process, from start (or resume) to end.",
            ["status"], buckets=RUN_BUCKETS, registry=r)
        self.host_duration = Histogram(
            "nfu_host_deploy_duration_seconds",
            "Duration of one host's deploy (pull and switch) in runs of this process.",
            ["outcome"], buckets=HOST_BUCKETS, registry=r)
        self.runs = Counter("nfu_deploy_runs", "Deploy runs finished by this process, by status.", ["status"],
                            registry=r)
        self.host_failures = Counter("nfu_host_deploy_failures", "Hosts whose deploy failed in runs of this process.",
                                     registry=r)
        self.rollbacks = Counter("nfu_rollbacks", "Rollbacks started by this process, by strategy.", ["strategy"],
                                 registry=r)
        for status in FINISHED_STATUSES:
            self.runs.labels(status)
            self.run_duration.labels(status)
        for outcome in HOST_OUTCOMES:
            self.host_duration.labels(outcome)
        for strategy in ROLLBACK_STRATEGIES:
            self.rollbacks.labels(strategy)
        r.register(_StateCollector(self))
        self._run_started: dict[int | None, float] = {}
        self._host_started: dict[tuple[int | None, str], float] = {}
        self._unsubscribe = service.subscribe(self._on_service_event)

    def close(self) -> None:
        self._unsubscribe()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- events -------------------------------------------------------------------

    def on_sink(self, event: str, **fields: Any) -> None:
        """The automation's log sink (``sink(event, level=..., **fields)``), for rollbacks."""
        if event == "rollback_started":
            strategy = str(fields.get("strategy", ""))
            if strategy in ROLLBACK_STRATEGIES:
                self.rollbacks.labels(strategy).inc()

    def _on_service_event(self, event: Any) -> None:
        if event.kind != "deploy" or event.payload is None:
            return
        ev = event.payload
        name = type(ev).__name__
        at = ev.at.timestamp()
        if name == "RunStarted":
            self._run_started[ev.run_id] = at
        elif name == "HostStarted":
            self._host_started.setdefault((ev.run_id, ev.host), at)
        elif name == "HostFinished":
            started = self._host_started.pop((ev.run_id, ev.host), None)
            outcome = ev.outcome.outcome.value
            if outcome == "failed":
                self.host_failures.inc()
            if started is not None and outcome in HOST_OUTCOMES:
                self.host_duration.labels(outcome).observe(max(0.0, at - started))
        elif name == "RunFinished":
            status = ev.result.status.value
            if status in FINISHED_STATUSES:
                self.runs.labels(status).inc()
                started = self._run_started.pop(ev.run_id, None)
                if started is not None:
                    self.run_duration.labels(status).observe(max(0.0, at - started))
            for key in [k for k in self._host_started if k[0] == ev.run_id]:
                del self._host_started[key]


def _enum_gauge(name: str, doc: str, label: str, values: tuple[str, ...], current: str) -> GaugeMetricFamily:
    """One series per possible value, 1 for the current one (the Prometheus "enum" pattern)."""
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value in values:
        family.add_metric([value], 1.0 if value == current else 0.0)
    return family


class _StateCollector(Collector):
    """Reads the service (and the journal) at scrape time."""

    def __init__(self, metrics: FleetMetrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []  # built per scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        service, now = self.m.service, self.m.clock()
        yield from self._update_pr(service, now)
        yield from self._hosts(service)
        yield from self._last_runs(service)
        yield from self._connections(service)
        runner = self.m.runner
        if runner is not None:
            from nfu_tui.core.automation import AutoState

            yield GaugeMetricFamily("nfu_automation_enabled", "1 when automation is on (config or the TUI toggle).",
                                    value=1.0 if runner.enabled() else 0.0)
            yield _enum_gauge("nfu_automation_state", "What automation is doing or waiting for (1 = current).",
                              "state", tuple(s.value for s in AutoState), runner.decision.state.value)

    @staticmethod
    def _update_pr(service: Any, now: float) -> Iterator[Metric]:
        pending = service.pending_update()
        yield GaugeMetricFamily("nfu_update_prs_open", "Open flake.lock update PRs (superseded ones included).",
                                value=float(len(service.prs)))
        yield GaugeMetricFamily("nfu_update_pr_pending", "1 while an update PR waits to be merged.",
                                value=1.0 if pending is not None else 0.0)
        if pending is None:
            return  # no number, no age: absent series rather than a made-up 0
        pr = pending.pr
        yield GaugeMetricFamily("nfu_update_pr_number", "Number of the pending update PR.", value=float(pr.number))
        if pr.created_at is not None:
            created = pr.created_at.timestamp()
            yield GaugeMetricFamily("nfu_update_pr_created_timestamp_seconds",
                                    "When the pending update PR was opened (Unix time).", value=created)
            yield GaugeMetricFamily("nfu_update_pr_age_seconds", "Age of the pending update PR.",
                                    value=max(0.0, now - created))

    @staticmethod
    def _hosts(service: Any) -> Iterator[Metric]:
        hosts = service.hosts()
        synced = bool(service.fleet.synced)
        yield GaugeMetricFamily("nfu_fleet_synced", "1 once the dashboard's fleet state is known.",
                                value=1.0 if synced else 0.0)
        if not synced:
            return  # host counts would read 0 before the fleet is known
        yield GaugeMetricFamily("nfu_hosts", "Hosts the dashboard reports.", value=float(len(hosts)))
        yield GaugeMetricFamily("nfu_hosts_online", "Hosts online.", value=float(sum(1 for h in hosts if h.online)))
        yield GaugeMetricFamily("nfu_hosts_behind", "Hosts behind the repository's main branch (Git outdated).",
                                value=float(sum(1 for h in hosts if h.git.state is CompartmentState.OUTDATED)))
        yield GaugeMetricFamily("nfu_hosts_held", "Hosts held (never deployed until released).",
                                value=float(len(service.held())))

    @staticmethod
    def _last_runs(service: Any) -> Iterator[Metric]:
        from nfu_tui.errors import StateError

        try:
            runs = service.store.list_runs(100)
        except StateError as exc:
            log.warning("metrics: cannot read the journal: %s", exc.message)
            return
        last: dict[str, Any] = {}
        for run in runs:  # newest first
            if run.kind in ("deploy", "converge") and run.trigger in RUN_TRIGGERS and run.trigger not in last:
                try:
                    steps = service.store.get_run(run.id).steps or ()
                except StateError:
                    continue
                # a rollback's redeploy is recovery, not "the last deploy"
                if not any(step.step == "revert_redeploy" for step in steps):
                    last[run.trigger] = run
        status = GaugeMetricFamily(
            "nfu_last_deploy_status",
            "Status of the last deploy or converge run (not a rollback's redeploy) per trigger (1 = current), "
            "from the journal.",
            labels=["trigger", "status"])
        stamp = GaugeMetricFamily(
            "nfu_last_deploy_timestamp_seconds",
            "When the last deploy run per trigger finished, or last changed while unfinished (Unix time).",
            labels=["trigger"])
        for trigger, run in sorted(last.items()):
            for value in RUN_STATUSES:
                status.add_metric([trigger, value], 1.0 if run.status == value else 0.0)
            stamp.add_metric([trigger], (run.finished_at or run.updated_at).timestamp())
        yield status
        yield stamp

    @staticmethod
    def _connections(service: Any) -> Iterator[Metric]:
        st = service.status
        yield _enum_gauge("nfu_dashboard_connection_state", "Connection to the NixFleet dashboard (1 = current).",
                          "state", DASHBOARD_STATES, st.dashboard)
        yield _enum_gauge("nfu_github_connection_state", "Polling of GitHub (1 = current).", "state",
                          GITHUB_STATES, st.github)
        if st.last_poll is not None:
            yield GaugeMetricFamily("nfu_github_last_poll_timestamp_seconds", "Last successful GitHub poll (Unix time).",
                                    value=st.last_poll.timestamp())
        rate = st.rate
        if rate.limit is not None:
            yield GaugeMetricFamily("nfu_github_rate_limit_requests", "GitHub's primary rate limit per window.",
                                    value=float(rate.limit))
        if rate.remaining is not None:
            yield GaugeMetricFamily("nfu_github_rate_remaining_requests", "GitHub requests left in this window.",
                                    value=float(rate.remaining))
        if rate.reset_epoch is not None:
            yield GaugeMetricFamily("nfu_github_rate_reset_timestamp_seconds",
                                    "When GitHub's rate window resets (Unix time).", value=float(rate.reset_epoch))


# ------------------------------------------------------------------ HTTP


async def serve_metrics(metrics: FleetMetrics, host: str, port: int) -> tuple[Any, int]:
    """Serve ``/metrics`` (and a pointer at ``/``) on ``host:port``; returns (aiohttp runner, bound port).

    Stop it with ``await runner.cleanup()``. OSError when the address cannot be bound.
    """
    from aiohttp import web

    async def handle_metrics(request: web.Request) -> web.Response:
        body = metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def handle_root(request: web.Request) -> web.Response:
        return web.Response(text="nfu-tui metrics: /metrics\n")

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/", handle_root)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    addresses = runner.addresses  # the bound port when port=0
    return runner, int(addresses[0][1]) if addresses else port


__all__ = ["DEFAULT_PORT", "FleetMetrics", "parse_listen", "serve_metrics"]
