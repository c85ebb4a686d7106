"""`nfu-tui deploy`: merge an update PR and deploy it without the TUI (same engine).

    nfu-tui deploy --pr N [--hosts a,b] [--yes] [--dry-run] [--wait-offline MIN]
    nfu-tui deploy --pr N --merge-only [--yes]
    nfu-tui deploy --converge [--hosts a,b] [--yes] [--dry-run] [--wait-offline MIN]
    nfu-tui deploy --resume [RUN_ID] [--yes]
    nfu-tui deploy --continue RUN_ID [--yes]
    nfu-tui deploy --abandon RUN_ID

``--converge`` merges nothing: it deploys the default branch's head to every online,
not held host whose generation is behind it (the plan says who and by what), e.g. to
finish a cancelled or failed run whose PR is already merged.

``--continue`` deploys the rest of a run that stopped because its canaries ended
``unverified`` (switched, but the fleet never confirmed them in time): it says what is
unproven, asks, then continues in a new run (no second merge, the canaries not again),
journaled and audited with who decided — the TUI's ``o`` "continue anyway".

Prints the plan, asks for confirmation on a terminal (``--yes`` skips it; without a
terminal ``--yes`` is required), then one line per state change
(``12:03:04 gpc0 pull started``), a line when the dashboard connection is lost and
when it is back, and what the run waits for when nothing else was said for 30 s.
Ctrl-C cancels the deploy: no new host starts, and
the commands already running are followed to their real outcome (the dashboard cannot
stop them). A second Ctrl-C, or SIGTERM, stops the process at once and leaves the run
resumable with ``--resume``.

Each host's outcome line ends with its three facts: ``[executed SUCCESS · reached ✓ ·
verified ✓]`` (the switch's result; the host's generation is the merge commit; the
dashboard reported System ok for it, and the tests passed where they ran).

A plan without any host to deploy (every chosen host held, or excluded) merges nothing:
it says so and exits 2. ``--merge-only`` merges the PR on purpose and deploys no host.

Exit codes: 0 success (hosts still offline and queued, and hosts held during the run,
are not failures), 1 a host failed, ended ``unknown`` or ``unverified``, the merge was
refused, the deploy was cancelled, or a service could not be reached / refused the
login, 2 bad input (unknown PR or host, no host to deploy, a run ``--continue`` cannot
continue, bad configuration, no confirmation possible).
"""

from __future__ import annotations

import argparse
import sys

from nfu_tui.commands import WEEK_MINUTES, number

PROG = "nfu-tui deploy"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="merge an update PR and deploy it (pull + switch per host) without the TUI",
        description="Merge an update PR (sha-guarded) and deploy it host by host through the fleet backend "
                    "(the NixFleet dashboard or SSH).",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--pr", type=int, metavar="N", help="the update PR to merge and deploy")
    what.add_argument("--converge", action="store_true",
                      help="no merge: bring every host behind the default branch's head to it")
    what.add_argument("--resume", nargs="?", type=int, const=0, metavar="RUN_ID",
                      help="continue an unfinished deploy run (the only one if no id is given)")
    what.add_argument("--continue", dest="continue_run", type=int, metavar="RUN_ID",
                      help="deploy the rest of a run that stopped on unverified canaries, without their proof")
    what.add_argument("--abandon", type=int, metavar="RUN_ID", help="mark an unfinished run as abandoned")
    p.add_argument("--hosts", metavar="A,B", help="deploy (or converge) only these hosts (comma-separated)")
    p.add_argument("--merge-only", action="store_true",
                   help="merge the PR and deploy no host (e.g. to deploy later with --converge or the TUI)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--wait-offline", type=number(0, WEEK_MINUTES), default=0.0, metavar="MIN",
                   help="keep waiting this many minutes (at most a week) for queued offline hosts (default 0: leave "
                        "them queued in the journal for a later --resume or the TUI)")


def run(args: argparse.Namespace) -> int:
    import asyncio

    if args.pr is not None and args.pr <= 0:
        return _bad("--pr needs a positive PR number")
    if args.hosts is not None and args.pr is None and not args.converge:
        return _bad("--hosts only applies to --pr and --converge")
    if args.merge_only and (args.pr is None or args.hosts is not None):
        return _bad("--merge-only needs --pr and no --hosts")
    if args.dry_run and args.abandon is not None:
        return _bad("--dry-run does not apply to --abandon")
    if args.abandon is not None:
        return _abandon(args.abandon)
    return asyncio.run(_Deploy(args).main())


def _bad(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _abandon(run_id: int) -> int:
    from nfu_tui.core.store import DeployLock, Store, local_actor
    from nfu_tui.errors import DeployLocked, StateError

    try:
        with Store() as store, DeployLock(label=f"{PROG} --abandon"):
            try:
                run = store.abandon_run(run_id, actor=local_actor(), where=PROG)
            except StateError as exc:  # no such run, or it has finished
                return _bad(exc.message)
    except DeployLocked as exc:
        return _fail(exc.message)
    except StateError as exc:  # the state directory cannot be used
        return _fail(str(exc))
    about = f" (PR #{run.pr})" if run.pr else ""
    print(f"run #{run_id}{about} abandoned; nothing on GitHub or the hosts was changed")
    return 0


def load_settings_or_ask(prog: str, config_path: str | None):  # type: ignore[no-untyped-def]
    """(config, secrets) for a command that talks to GitHub and the fleet, the dashboard password asked
    for on a terminal when none is stored; else the bad-input message (exit 2)."""
    from nfu_tui.config import load_settings, missing_settings
    from nfu_tui.errors import ConfigError

    try:
        cfg, secrets = load_settings(config_path)
    except ConfigError as exc:
        return exc.message
    for warning in secrets.warnings:
        print(f"{prog}: warning: {warning}", file=sys.stderr)
    problems = missing_settings(cfg, secrets, password=False)  # asked for below on a terminal
    if problems:
        return "; ".join(problems)
    if secrets.dashboard_password is None and not cfg.uses_ssh:
        if not sys.stdin.isatty():
            return "no dashboard password (set dashboard.password_file or NIXFLEET_PASSWORD)"
        import getpass

        secrets.dashboard_password = _secret(getpass.getpass("Dashboard password: "))
    return cfg, secrets


async def login(backend) -> None:  # type: ignore[no-untyped-def]
    """Log in to the fleet backend (the dashboard; nothing to do over SSH), asking for a TOTP code on a terminal
    when the dashboard needs one."""
    import asyncio

    from nfu_tui.errors import LoginFailed

    try:
        await backend.login()
    except LoginFailed as exc:
        if not exc.needs_totp or not sys.stdin.isatty():
            raise
        code = await asyncio.to_thread(input, "Dashboard TOTP code: ")
        await backend.login(totp_code=code.strip())


class _Deploy:
    """One CLI invocation: set-up, plan, confirmation, the engine run, the summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.interrupts = 0

    async def main(self) -> int:
        from nfu_tui.errors import DeployLocked, NfuError

        settings = load_settings_or_ask(PROG, self.args.config)
        if isinstance(settings, str):
            return _bad(settings)
        self.cfg, self.secrets = settings
        try:
            with self._deploy_lock():
                return await self._with_clients()
        except DeployLocked as exc:
            return _fail(f"{exc.message}; try again when it has finished")
        except NfuError as exc:  # connection, authentication, state: one line
            return _fail(f"{exc.title}: {exc}")

    def _deploy_lock(self):  # type: ignore[no-untyped-def]
        """Held from before the plan is shown until the end: fail fast, and no deploy sneaks in
        while the user reads the plan. A dry run takes no lock."""
        import contextlib

        from nfu_tui.core.store import DeployLock

        if self.args.dry_run:
            return contextlib.nullcontext()
        args = self.args
        what = (f"--pr {args.pr}" if args.pr is not None else "--converge" if args.converge else
                f"--continue {args.continue_run}" if args.continue_run is not None else "--resume")
        return DeployLock(label=f"{PROG} {what}")

    async def _with_clients(self) -> int:
        from nfu_tui.clients.factory import fleet_backend, github_client
        from nfu_tui.core.store import Store
        from nfu_tui.errors import NfuError

        cfg, secrets = self.cfg, self.secrets
        try:
            backend = fleet_backend(cfg, secrets, insecure=self.args.insecure)
        except NfuError as exc:
            return _bad(exc.message)
        github = github_client(cfg, secrets)
        async with backend, github:
            with Store() as store:
                return await self._deploy(github, backend, store)

    async def _deploy(self, github, backend, store) -> int:  # type: ignore[no-untyped-def]
        import asyncio

        from nfu_tui.backends.base import info_of
        from nfu_tui.core.converge import fleet_lag
        from nfu_tui.core.engine import to_continue
        from nfu_tui.core.live import LiveFleet
        from nfu_tui.core.plan import DeployPlan, make_plan, merge_only
        from nfu_tui.core.state import AppState
        from nfu_tui.core.takeover import with_takeovers
        from nfu_tui.core.watch import RunWatch
        from nfu_tui.errors import GitHubNotFound, StateError

        args = self.args
        run_id: int | None = None
        pr = None  # the PR of a new run (a resumed or continued run has its context already)
        canaries: list = []  # a continued run's unverified canaries (HostOutcome)
        if args.pr is not None:
            try:
                pr = await github.get_pull(args.pr, wait_mergeable=False)  # the engine re-reads it
            except GitHubNotFound:
                return _bad(f"PR #{args.pr} not found in {self.cfg.github.repo} (or the token cannot see it)")
        elif args.continue_run is not None:
            try:
                _, canaries = to_continue(store, args.continue_run)
            except StateError as exc:  # an unknown run, or one that did not stop on unverified canaries alone
                return _bad(exc.message)
            run_id = args.continue_run
        elif not args.converge:
            unfinished = store.unfinished_runs()
            try:
                run_id = self._pick_run(unfinished, args.resume)
            except StateError as exc:
                return _bad(exc.message)
        await login(backend)
        self.watch: RunWatch | None = None  # from the first fleet state on: lost/back lines
        view = LiveFleet(backend, on_stream=lambda event, _changes: self._on_stream(view, event))
        await view.start()
        self.watch = RunWatch(info=info_of(backend))
        try:
            if run_id is None:
                targets = None
                if args.hosts is not None:
                    targets = [h.strip() for h in args.hosts.split(",") if h.strip()]
                    known = {h.id for h in view.hosts()}
                    unknown = [h for h in targets if h not in known]
                    if not targets:
                        return _bad("--hosts names no host")
                    if unknown:
                        return _bad(f"unknown host(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
                state = AppState.load()
                if args.converge:
                    branch, target, lag = await fleet_lag(github, view.hosts(), backend=info_of(backend))
                    plan = make_plan(view.hosts(), self.cfg, state.held, targets=targets, head_sha=target,
                                     overrides=state.overrides, lag=lag, branch=branch)
                else:
                    plan = make_plan(view.hosts(), self.cfg, state.held, targets=targets, pr_number=pr.number,
                                     head_sha=pr.head_sha, overrides=state.overrides)
                    if args.merge_only and pr.merged:
                        return _bad(f"PR #{pr.number} is already merged ({pr.merge_commit_sha[:7]}): nothing to merge; "
                                    f"deploy it with nfu-tui deploy --pr {pr.number} or nfu-tui deploy --converge")
                    if args.merge_only:
                        plan = merge_only(plan)
                    elif not plan.hosts and not plan.merge_only:
                        for line in plan.describe():
                            print(line)
                        return _bad(f"no host to deploy, so PR #{pr.number} is not merged; release a hold or name "
                                    f"other hosts, or merge it without a deploy: nfu-tui deploy --pr {pr.number} "
                                    "--merge-only")
                if not args.converge and pr.merged:
                    print(f"PR #{pr.number} is already merged ({pr.merge_commit_sha[:7]}): deploying it")
                plan = with_takeovers(store, plan)
            else:
                run = store.get_run(run_id)
                plan = DeployPlan.from_dict(run.plan)
                print(f"{'Continuing' if canaries else 'Resuming'} run #{run_id} from "
                      f"{run.created_at.astimezone():%Y-%m-%d %H:%M} by {run.actor}"
                      + (" past its canaries, in a new run" if canaries else ""))
                for line in _journal_lines(run):
                    print(f"  {line}")
                for line in _continue_lines(run, canaries):
                    print(line)
            for line in plan.describe():
                print(line)
            if args.dry_run:
                return 0
            if run_id is None and plan.converge and not plan.entries and not plan.queued:
                print("Nothing done: no host to converge.")
                return 0
            if not args.yes:
                if not sys.stdin.isatty():
                    return _bad("refusing to deploy without confirmation: no terminal to ask on; pass --yes")
                verb = ("Continue anyway" if canaries else "Resume" if run_id is not None
                        else plan.subject.capitalize() if plan.converge else f"Merge PR #{plan.pr_number} and deploy")
                # In a thread: the fleet stream keeps being served while the user reads the plan.
                answer = (await asyncio.to_thread(input, f"{verb}? [y/N] ")).strip().lower()
                if answer not in ("y", "yes"):
                    print("Nothing done.")
                    return 1
            return await self._run_engine(github, backend, view, store, plan, run_id, pr)
        finally:
            await view.stop()

    @staticmethod
    def _pick_run(unfinished, wanted: int) -> int:  # type: ignore[no-untyped-def]
        from nfu_tui.errors import StateError

        deploys = [r for r in unfinished if r.kind in ("deploy", "converge")]
        if wanted:
            if not any(r.id == wanted for r in deploys):
                raise StateError(f"run #{wanted} is not an unfinished deploy run")
            return wanted
        if not deploys:
            raise StateError("there is no unfinished deploy run to resume")
        if len(deploys) > 1:
            listed = "; ".join(f"#{r.id} {f'PR #{r.pr}' if r.pr else r.kind} ({r.created_at.astimezone():%Y-%m-%d %H:%M})"
                               for r in deploys)
            raise StateError(f"several unfinished runs: {listed}; name one: --resume RUN_ID")
        return deploys[0].id

    async def _run_engine(self, github, backend, view, store, plan, run_id, pr) -> int:  # type: ignore[no-untyped-def]
        import asyncio
        import contextlib
        import signal

        from nfu_tui.core.deployments import for_config
        from nfu_tui.core.engine import DeployEngine, RunStarted, RunStatus, continuable, continue_command
        from nfu_tui.core.history import pr_context, record_context
        from nfu_tui.core.notify import Outbox, WebhookNotifier
        from nfu_tui.core.state import AppState
        from nfu_tui.core.store import local_actor

        # What the run is about (title, lock diff, headline), journaled when it starts, as the TUI does
        context = await pr_context(github, pr) if pr is not None else None
        deployments = for_config(self.cfg, github, store, label=PROG,  # the run on GitHub, others' runs as a lock
                                 notify=lambda n: print(f"{PROG}: warning: {n.message}", file=sys.stderr))

        def on_event(event) -> None:  # type: ignore[no-untyped-def]
            if (context is not None and isinstance(event, RunStarted) and not event.resumed
                    and event.run_id is not None):
                record_context(store, event.run_id, {**context, "head_sha": event.head_sha})
            self._on_engine_event(event)
            if deployments is not None:
                deployments.on_event(event)

        # Through the durable outbox: what this process cannot deliver, nfu-tui auto (or the TUI) retries.
        notifier = Outbox(store, WebhookNotifier(self.cfg.notify.webhook_url)) if self.cfg.notify.webhook_url else None
        engine = DeployEngine(github, backend, view, store, self.cfg, notifier=notifier,
                              lock=contextlib.nullcontext,  # this command already holds the deploy lock
                              remote_lock=deployments.check_lock if deployments is not None else None,
                              on_event=on_event,
                              is_held=AppState.load().held_now)  # `nfu-tui hold` from anywhere takes effect now
        wait = self.args.wait_offline * 60.0
        if run_id is None:
            job = engine.run(plan, actor=local_actor(), queued_wait=wait)
        elif self.args.continue_run is not None:
            job = engine.continue_unverified(run_id, actor=local_actor(), queued_wait=wait)
        else:
            job = engine.resume(run_id, actor=local_actor(), queued_wait=wait)
        task = asyncio.ensure_future(job)
        ticker = asyncio.ensure_future(self._say_what_we_wait_for())
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            self.interrupts += 1
            if self.interrupts == 1 and engine.running:
                print(f"{PROG}: cancelling (Ctrl-C again to stop at once and keep the run resumable)", flush=True)
                engine.cancel()
            else:
                task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            result = await task
        except asyncio.CancelledError:
            rid = engine.run_id
            where = f" run #{rid}" if rid else ""
            return _fail(f"stopped;{where} left unfinished: `nfu-tui deploy --resume{' ' + str(rid) if rid else ''}`")
        finally:
            ticker.cancel()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            if deployments is not None:
                await deployments.close()  # the last statuses reach GitHub
        print(result.summary())
        for o in result.outcomes:
            print(f"  {o.describe()}")
        queued = [o.host for o in result.outcomes if o.outcome.value == "queued"]
        if queued:
            print(f"{', '.join(queued)} still offline: run #{result.run_id} stays open; "
                  f"`nfu-tui deploy --resume {result.run_id}` (or the TUI) deploys them once they are online")
        if result.status is RunStatus.UNVERIFIED and continuable(store.get_run(result.run_id)):
            print(f"stopped at the canaries: {continue_command(result.run_id)} (or `o` in the TUI)")
        sys.stdout.flush()
        return result.exit_code

    # --- what the run says while it goes on ------------------------------------------

    def _say(self, text: str) -> None:
        import time
        from datetime import datetime

        self.said_at = time.monotonic()
        print(f"{datetime.now().strftime('%H:%M:%S')} {text}", flush=True)

    def _on_stream(self, view, event) -> None:  # type: ignore[no-untyped-def]
        """A line when the fleet backend's connection is lost (the first failure) and when the fleet state is back."""
        from nfu_tui.clients._dashboard_protocol import Disconnected

        if self.watch is None:
            return
        if isinstance(event, Disconnected):
            line = self.watch.connection(False, event.reason)
        elif view.model.synced:
            line = self.watch.connection(True)
        else:
            return
        if line is not None:
            self._say(line)

    def _on_engine_event(self, event) -> None:  # type: ignore[no-untyped-def]
        import time

        assert self.watch is not None
        self.watch.engine(event)
        self.said_at = time.monotonic()
        _print_event(event)

    async def _say_what_we_wait_for(self) -> None:
        """Every ``QUIET_SECONDS`` without a line: what the run is waiting for (sleeps in between)."""
        import asyncio
        import time

        from nfu_tui.core.watch import QUIET_SECONDS

        self.said_at = time.monotonic()
        while True:
            quiet = time.monotonic() - self.said_at
            if quiet >= QUIET_SECONDS and self.watch is not None:
                self._say(self.watch.waiting())
                continue
            await asyncio.sleep(QUIET_SECONDS - quiet)


def _secret(value: str):  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    return SecretStr(value)


def _print_event(event) -> None:  # type: ignore[no-untyped-def]
    from nfu_tui.core.engine import HostFinished, RunFinished

    if isinstance(event, RunFinished):
        return  # the summary follows
    stamp = event.at.astimezone().strftime("%H:%M:%S")
    print(f"{stamp} {event.line()}", flush=True)
    if isinstance(event, HostFinished) and event.outcome.last_lines and event.outcome.outcome.value in (
            "failed", "unknown"):
        for line in event.outcome.last_lines:
            print(f"         | {line}", flush=True)


def _journal_lines(run) -> list[str]:  # type: ignore[no-untyped-def]
    from nfu_tui.core.engine import JournalState

    st = JournalState.from_run(run)
    lines = [f"merged as {st.merge_sha[:7]}" if st.merge_sha else
             ("merge requested, outcome to be checked on GitHub" if st.merge_requested else "not merged yet")]
    if st.finished:
        lines.append("done: " + ", ".join(f"{h} {o.outcome.value}" for h, o in st.finished.items()))
    if st.in_flight:
        lines.append("interrupted: " + ", ".join(f"{h} ({phase})" for h, (phase, _, _) in st.in_flight.items()))
    return lines


def _continue_lines(run, canaries) -> list[str]:  # type: ignore[no-untyped-def]
    """What continuing ``run`` past its unverified ``canaries`` leaves unproven, as the TUI's ``o`` asks it."""
    from nfu_tui.core.engine import JournalState, Outcome
    from nfu_tui.core.plan import DeployPlan
    from nfu_tui.core.store import local_actor

    if not canaries:
        return []
    names = ", ".join(o.host for o in canaries)
    one = len(canaries) == 1
    finished = JournalState.from_run(run).finished
    rest = [h for h in DeployPlan.from_dict(run.plan).hosts if h not in {o.host for o in canaries}
            and (h not in finished or finished[h].outcome is not Outcome.HELD)]
    return [f"It stopped because {names} {'was' if one else 'were'} never verified:",
            *(f"  • {o.host} ({o.facts()}): {o.detail or 'not verified'}" for o in canaries),
            f"Not proven: that {names} {'runs' if one else 'run'} the new generation healthily. No failure is proven "
            "either, so nothing was rolled back.",
            f"The {len(rest)} other host(s) ({', '.join(rest)}) are deployed in a new run, each verified as usual; "
            f"no second merge, {names} not redeployed. Journaled and audited as {local_actor()}."]
