"""`nfu-tui auto`: the automation without the TUI (a systemd service or timer).

    nfu-tui auto [--once] [--stop-grace SECONDS] [--ready-timeout SECONDS]
                 [--metrics-listen HOST:PORT [--metrics-allow-remote]]

Runs :class:`~nfu_tui.core.automation.AutomationRunner` on the configured GitHub
repository and dashboard with the same state file, journal, audit trail and deploy
lock as the TUI (so the TUI shows what it does, and the two never deploy at once).
Automation follows ``flake_updates.automation.enabled`` unless the TUI toggle
overrides it; while it is off this process idles and says so.

Output: one JSON object per line on stdout, flushed, e.g.
``{"ts": "2026-08-16T02:00:03.123456+00:00", "level": "info", "event": "decision",
"state": "waiting-delay", "text": "merging PR #42 in 37 min — waiting for CI", ...}``.
``event`` is one of ``started``, ``ready``, ``connection``, ``decision``, ``notify``,
``merge``, ``resume``, ``busy``, the engine's events (``run_started``,
``merge_requested``, ``merged``, ``merge_refused``, ``host_queued``, ``host_started``,
``host_progress``, ``host_finished``, ``waiting_for_canaries``, ``canary_gate``,
``paused``, ``unpaused``, ``cancel_requested``, ``run_finished``; each with ``run``,
``host`` and the human ``message``), ``run_result``, ``rollback_*``, ``revert_opened``,
``suspended``, ``stopping``, ``error``, ``metrics`` (its URL), ``metrics_remote``, ``log``
(library warnings) and ``stopped``;
``dashboard_lost`` / ``dashboard_back`` when the dashboard connection is lost and when
its fleet state is live again, and ``waiting`` (``text``: what it waits for) when a run
is in progress or the dashboard is lost and nothing was logged for 30 s.
The human text is always under ``message``. ``level`` follows the outcome: a failed
run, host or rollback and a non-zero exit are ``error``; a pause, a suspension, an
undelivered notification are ``warning``. Secrets never appear.

``--metrics-listen 127.0.0.1:9464`` serves Prometheus metrics at ``/metrics``
(:mod:`nfu_tui.core.metrics`). Only loopback addresses unless ``--metrics-allow-remote``
is given (then a warning is logged): the metrics name the repository, PRs and host counts.

Signals: SIGTERM/SIGINT stop cleanly — no new host starts, the host or merge in
flight finishes (at most ``--stop-grace`` seconds, default 60; after that it is
interrupted and stays journaled), the run is left resumable in the journal, exit 0.
A second signal stops at once (the journal is still resumable).

``--once``: wait until the dashboard's fleet state and GitHub's PR list are known,
resume due automatic runs, then decide and act if something is due (a full merge +
deploy included), and exit. Exit codes: 0 — nothing due, waiting, blocked (notified),
or the action succeeded; 1 — an action failed (merge refused, deploy or rollback
failed) or a service could not be reached; 2 — bad configuration.
"""

from __future__ import annotations

import argparse
import sys

from nfu_tui.commands import number

PROG = "nfu-tui auto"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "auto",
        help="run the automation headless (systemd service), JSON log lines on stdout",
        description="Detect, wait, merge and deploy update PRs automatically, without the TUI.",
    )
    p.add_argument("--once", action="store_true", help="one detection cycle (act if due), then exit (for timers)")
    p.add_argument("--stop-grace", type=number(0, 3600), default=60.0, metavar="SECONDS",
                   help="on SIGTERM, how long to let the host or merge in flight finish (default 60, at most 3600)")
    p.add_argument("--ready-timeout", type=number(0, 3600, above=True), default=60.0, metavar="SECONDS",
                   help="--once: how long to wait for the dashboard and GitHub (default 60, at most 3600)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464)")
    p.add_argument("--metrics-allow-remote", action="store_true",
                   help="allow --metrics-listen on a non-loopback address (anyone who reaches it reads the metrics)")


def run(args: argparse.Namespace) -> int:
    import asyncio

    listen = None
    if args.metrics_listen:
        from nfu_tui.config import is_loopback_host
        from nfu_tui.core.metrics import parse_listen

        try:
            listen = parse_listen(args.metrics_listen)
        except ValueError as exc:
            print(f"{PROG}: --metrics-listen {exc}", file=sys.stderr)
            return 2
        if not is_loopback_host(listen[0]) and not args.metrics_allow_remote:
            print(f"{PROG}: --metrics-listen {listen[0]} is not a loopback address: anyone who reaches it reads "
                  "the metrics (repository, PRs, fleet state); add --metrics-allow-remote to allow it, or "
                  "listen on 127.0.0.1 behind a reverse proxy", file=sys.stderr)
            return 2
    args.listen = listen
    from nfu_tui.config import load_settings, missing_settings
    from nfu_tui.errors import ConfigError

    log = JsonLog(sys.stdout)
    try:
        cfg, secrets = load_settings(args.config)
    except ConfigError as exc:
        log("config_error", level="error", message=exc.message)
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 2
    for warning in secrets.warnings:
        log("config_warning", level="warning", message=warning)
    problems = missing_settings(cfg, secrets)
    if problems:
        for problem in problems:
            log("config_error", level="error", message=problem)
        print(f"{PROG}: " + "; ".join(problems), file=sys.stderr)
        return 2
    return asyncio.run(_Auto(args, cfg, secrets, log).main())


class JsonLog:
    """Writes ``{"ts", "level", "event", ...}`` lines and flushes each one."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        import time

        self.stream = stream
        self.last_at = time.monotonic()  # when the last line was written

    def __call__(self, event: str, level: str = "info", **fields: object) -> None:
        import json
        import time
        from datetime import datetime, timezone

        from nfu_tui.sanitize import sanitize_data

        self.last_at = time.monotonic()
        record = {"ts": datetime.now(timezone.utc).isoformat(timespec="microseconds"), "level": level,
                  "event": event, **fields}
        try:  # every field passes the redaction boundary: no secret, valid UTF-8, no control sequences
            self.stream.write(json.dumps(sanitize_data(record), ensure_ascii=False) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed (e.g. the journal went away): keep working


def _install_log_bridge(log: JsonLog) -> None:
    """Library warnings (engine, notifier, …) as JSON lines too."""
    import logging

    class Bridge(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = record.getMessage()
            except Exception:  # a malformed log call must not kill the service
                message = str(record.msg)
            log("log", level=record.levelname.lower(), logger=record.name, message=message)

    root = logging.getLogger()
    root.addHandler(Bridge(logging.WARNING))
    root.setLevel(min(root.level or logging.WARNING, logging.WARNING))


def _event_name(event: object) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


class _Auto:
    def __init__(self, args: argparse.Namespace, cfg, secrets, log: JsonLog) -> None:  # type: ignore[no-untyped-def]
        self.args, self.cfg, self.secrets, self.log = args, cfg, secrets, log
        self.signals = 0
        self.main_task = None
        self.last_status: tuple[str, str] = ("", "")
        self.watch = None  # a RunWatch from the first live fleet state on
        self.metrics = None

    def _sink(self, event: str, level: str = "info", **fields: object) -> None:
        """The automation's log: JSON lines, and the metrics' rollback counter."""
        self.log(event, level=level, **fields)
        if self.metrics is not None:
            self.metrics.on_sink(event, **fields)

    async def main(self) -> int:
        import asyncio
        import signal

        from nfu_tui.core.automation import AutomationRunner
        from nfu_tui.core.service import FleetService
        from nfu_tui.errors import NfuError, StateError

        _install_log_bridge(self.log)
        self.main_task = asyncio.current_task()
        try:
            service = FleetService(self.cfg, self.secrets, lock_label="nfu-tui auto", insecure=self.args.insecure)
        except StateError as exc:  # the state directory cannot be used: an operational failure
            self.log("error", level="error", title=exc.title, message=str(exc))
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
        except NfuError as exc:
            self.log("error", level="error", title=exc.title, message=str(exc))
            return 2
        runner = AutomationRunner(service, sink=self._sink, stop_grace=self.args.stop_grace)
        self.runner = runner
        metrics_server = None
        if getattr(self.args, "listen", None):
            metrics_server = await self._serve_metrics(service, runner)
            if metrics_server is None:
                runner.close()
                service.store.close()
                return 2
        unsubscribe = service.subscribe(lambda ev: self._on_service_event(service, ev))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.log("started", mode="once" if self.args.once else "service", repo=self.cfg.github.repo,
                 dashboard=self.cfg.dashboard.url, automation="on" if runner.enabled() else "off",
                 windows=runner.windows.describe_next(runner.clock()))
        code = 0
        ticker = asyncio.ensure_future(self._say_what_we_wait_for(runner))
        try:
            await service.start()
            if self.args.once:
                code = await self._once(service, runner)
            else:
                self._audit(service, runner, "started")
                await runner.run_forever()
                self._audit(service, runner, "stopped")
        except asyncio.CancelledError:
            self.log("interrupted", level="warning", message="stopped at once; unfinished runs stay resumable")
        except Exception as exc:  # a bug: say what happened, exit non-zero so systemd restarts the service
            import traceback

            self.log("crashed", level="error", message=f"{type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc(limit=20))
            code = 1
        finally:
            ticker.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            unsubscribe()
            runner.close()
            if metrics_server is not None:
                self.metrics.close()
                await metrics_server.cleanup()
            await service.stop()
            service.store.close()
        self.log("stopped", level="error" if code else "info", exit_code=code)
        return code

    async def _serve_metrics(self, service, runner):  # type: ignore[no-untyped-def]
        """Start the /metrics endpoint; None (logged) when the address cannot be bound."""
        from nfu_tui.config import is_loopback_host
        from nfu_tui.core.metrics import FleetMetrics, serve_metrics

        host, port = self.args.listen
        self.metrics = FleetMetrics(service, runner)
        try:
            server, bound = await serve_metrics(self.metrics, host, port)
        except OSError as exc:
            self.metrics.close()
            self.metrics = None
            self.log("error", level="error", title="Metrics", message=f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            print(f"{PROG}: --metrics-listen: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return None
        shown = f"[{host}]" if ":" in host else host
        self.log("metrics", url=f"http://{shown}:{bound}/metrics")
        if not is_loopback_host(host):
            self.log("metrics_remote", level="warning",
                     message=f"metrics are served on {host}, not only on loopback (--metrics-allow-remote)")
        return server

    def _audit(self, service, runner, event: str) -> None:  # type: ignore[no-untyped-def]
        """The service's start and stop, with the automation settings in effect, in the audit trail."""
        import os

        from nfu_tui.core.store import local_actor
        from nfu_tui.errors import StateError

        auto = self.cfg.flake_updates.automation
        details = {"event": event, "pid": os.getpid(), "automation": runner.enabled(),
                   "delay_minutes": auto.delay_minutes, "require_ci": auto.require_ci,
                   "deploy_strategy": auto.deploy_strategy, "windows": list(auto.maintenance_windows),
                   "rollback": self.cfg.flake_updates.rollback.strategy if self.cfg.flake_updates.rollback.enabled
                   else "off"}
        if event == "stopped":
            details = {"event": event, "pid": details["pid"], "signals": self.signals}
        try:
            service.store.audit("auto_service", actor=local_actor(), details=details)
        except StateError as exc:
            self.log("state_error", level="warning", message=exc.message)

    def _on_signal(self, sig: int) -> None:
        import signal

        self.signals += 1
        name = signal.Signals(sig).name
        if self.signals == 1:
            self.log("signal", signal=name, message="stopping: no new host starts; the step in flight finishes")
            self.runner.request_stop(name)
            if self.args.once and not self.runner.acting and self.main_task is not None:
                self.main_task.cancel()  # still connecting or deciding: nothing to finish
        elif self.main_task is not None:
            self.log("signal", level="warning", signal=name, message="second signal: stopping now")
            self.main_task.cancel()

    async def _once(self, service, runner) -> int:  # type: ignore[no-untyped-def]
        ready, problem = await self._wait_ready(service)
        if not ready:
            self.log("error", level="error", message=problem)
            return 1
        self.log("ready", hosts=len(service.hosts()), prs=[s.pr.number for s in service.prs])
        result = await runner.run_once()
        await service.outbox.deliver_due()  # also retries notifications an earlier run could not deliver
        self.log("cycle", level="info" if result.ok else "error", state=result.decision.state.value,
                 text=result.decision.describe(runner.clock()), acted=result.acted, ok=result.ok,
                 message=result.message)
        return 0 if result.ok else 1

    async def _wait_ready(self, service) -> tuple[bool, str]:  # type: ignore[no-untyped-def]
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.ready_timeout
        while True:
            status = service.status
            if status.dashboard in ("login-required",):
                return False, f"dashboard login failed: {status.dashboard_detail}"
            if service.fleet.synced and status.last_poll is not None:
                return True, ""
            if loop.time() >= deadline:
                what = []
                if not service.fleet.synced:
                    what.append(f"dashboard {status.dashboard} {status.dashboard_detail}".strip())
                if status.last_poll is None:
                    what.append(f"GitHub {status.github} {status.github_detail}".strip())
                return False, "not ready within the timeout: " + "; ".join(what)
            await asyncio.sleep(0.1)

    async def _say_what_we_wait_for(self, runner) -> None:  # type: ignore[no-untyped-def]
        """A ``waiting`` line after ``QUIET_SECONDS`` of silence while a run goes on or the dashboard is lost."""
        import asyncio
        import time

        from nfu_tui.core.watch import QUIET_SECONDS

        while True:
            quiet = time.monotonic() - self.log.last_at
            if quiet < QUIET_SECONDS:
                await asyncio.sleep(QUIET_SECONDS - quiet)
            elif self.watch is not None and (runner.acting or not self.watch.live):
                self.log("waiting", text=self.watch.waiting())
            else:
                await asyncio.sleep(QUIET_SECONDS)

    def _connection_line(self, status) -> None:  # type: ignore[no-untyped-def]
        from nfu_tui.core.watch import RunWatch

        live = status.dashboard == "live"
        if self.watch is None:
            if live:
                self.watch = RunWatch()
            return
        line = self.watch.connection(live, status.dashboard_detail)
        if line is not None:
            self.log("dashboard_back" if live else "dashboard_lost", level="info" if live else "warning",
                     message=line)

    def _on_service_event(self, service, event) -> None:  # type: ignore[no-untyped-def]
        if event.kind == "deploy" and event.payload is not None:
            ev = event.payload
            if self.watch is not None:
                self.watch.engine(ev)
            fields = {"run": ev.run_id, "message": ev.line()}
            if ev.host:
                fields["host"] = ev.host
            level = {"Paused": "warning", "MergeRefused": "warning", "CancelRequested": "warning"}.get(
                type(ev).__name__, "info")
            result = getattr(ev, "result", None)  # RunFinished
            if (result is not None and not result.ok) or getattr(ev, "passed", True) is False:
                level = "error"  # a failed run, a failed canary gate
            outcome = getattr(ev, "outcome", None)
            if outcome is not None and getattr(outcome, "outcome", None) is not None:
                fields["outcome"] = outcome.outcome.value
                fields.update(executed=outcome.executed, reached=outcome.reached, verified=outcome.verified,
                              proven=outcome.proven)
                if outcome.outcome.value in ("failed", "unknown"):
                    level = "error"
                    fields["log_excerpt"] = list(outcome.last_lines)
                elif outcome.outcome.value == "unverified":
                    level = "warning"
            self.log(_event_name(ev), level=level, **fields)
        elif event.kind == "status":
            status = service.status
            self._connection_line(status)
            now = (f"{status.dashboard}:{status.dashboard_detail}", f"{status.github}:{status.github_detail}")
            if now != self.last_status:
                self.last_status = now
                bad = status.dashboard in ("error", "login-required") or status.github in ("error", "rate-limited")
                self.log("connection", level="warning" if bad else "info", dashboard=status.dashboard,
                         dashboard_detail=status.dashboard_detail, github=status.github,
                         github_detail=status.github_detail)
