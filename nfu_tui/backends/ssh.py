"""The SSH fleet backend: NixOS (and nix-darwin) hosts reached directly with asyncssh.

:class:`SshFleet` stands where the NixFleet :class:`~nfu_tui.clients.dashboard.DashboardClient`
stands: :class:`~nfu_tui.core.live.LiveFleet` follows it into a
:class:`~nfu_tui.clients.fleet.FleetModel` (``follow``), and the deploy engine, the
rollback manager and the service dispatch operations through it (``dispatch``,
``timeout_action``, ``command_states``). It speaks the model's own message shapes
(``init`` then numbered ``delta`` s), so everything above it works unchanged.

Facts (``/work/shared/contracts/ssh-hosts.md`` and the style guide §11):

* **Host keys are checked strictly** against ``[ssh] known_hosts``: an unknown or a
  changed key is refused with the host's name and the offered key's ``SHA256:``
  fingerprint; nothing is ever added to the file.
* **One connection per host**, reused; at most ``max_concurrency`` probes or launches
  at once; ``connect_timeout`` bounds every connect (a silent network never hangs).
* **Probes** every ``poll_seconds``, one command per host: Agent = reachable; Git =
  the checkout's commit vs the default branch head on GitHub; Lock = ``flake.lock``'s
  git blob hash vs the branch head's; System = ``nixos-version --json``'s
  ``configurationRevision`` vs the checkout and ``systemctl is-system-running``
  (``degraded`` names the failed units); Tests = the last ``test`` result. Reboot
  needed compares ``/run/booted-system`` and ``/run/current-system`` (kernel, initrd,
  kernel-modules); unreadable links make it unknown (``None``), never "no".
* **Operations run detached** on the host (``setsid``, output to a log file under
  ``~/.cache/nfu-tui``, exit code to ``ID.rc``), so a lost SSH session does not stop
  a switch; the log is followed with ``tail --pid`` and re-followed after a reconnect
  from the line it reached. ``~/.cache/nfu-tui/last`` names the newest command, so a
  new process (``deploy --resume``) finds and follows it. **Cancel** terminates the
  command's process group (TERM, then KILL after 3 s); the command ends ``KILLED``.
* **Previews** (``nixos-rebuild build`` of a PR head, never activated) run detached the same way and
  are read after a reconnect; only the build's own failure is a build failure (a lost host or a killed
  build leaves the preview unavailable).
* **Verification after a switch**: exit 0 is not enough; the host must run the
  checked-out commit (``configurationRevision``) and no unit may have failed that was
  fine before the switch, else the switch ends ``ERROR`` saying which.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncssh

from nfu_tui.backends.base import SSH
from nfu_tui.clients._dashboard_protocol import Connected, DispatchResult, Message
from nfu_tui.clients.fleet import FleetChange, FleetModel, FleetSnapshot
from nfu_tui.errors import DashboardError
from nfu_tui.models import Command
from nfu_tui.sanitize import sanitize_line

log = logging.getLogger(__name__)

AGENT_VERSION = "ssh"
OPS = ("pull", "switch", "test", "rollback")  # run detached on the host
REFRESH_SYSTEM = "refresh-system"  # the dashboard's "check the running system now": here a probe of the host
STOP_GRACE = 3.0  # seconds between TERM and KILL on cancel
STATE_DIR = "$HOME/.cache/nfu-tui"
REBOOT_LINKS = ("kernel", "initrd", "kernel-modules")
RECONNECT_WINDOW = 120.0  # seconds a detached preview's host may stay unreachable before it is given up
FIRST_PROBE_WAIT = 20.0  # seconds the first fleet state waits for slow hosts (LiveFleet.start allows 30)


class SshError(DashboardError):
    title = "SSH error"


class HostKeyRefused(SshError):
    title = "SSH host key refused"


class ConnectionLost(SshError):
    """The connection broke while a command ran (the host was reached; what the command did is unknown)."""


@dataclass(frozen=True, slots=True)
class SshHost:
    """One host as the configuration describes it."""

    name: str
    user: str
    address: str
    port: int = 22
    flake_attr: str = ""
    repo_dir: str = "/etc/nixos"
    system: str = "nixos"  # nixos | darwin
    test_command: str = ""
    device_type: str = ""  # from [hosts.NAME] role = "KIND/LOCATION", as the dashboard's device_type
    location: str = ""

    @property
    def host_type(self) -> str:
        """The dashboard's word for the system (``nixos`` | ``macos``) as the configuration says it."""
        return "macos" if self.system == "darwin" else "nixos"

    @property
    def attr(self) -> str:
        return self.flake_attr or self.name

    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


def hosts_from_config(cfg: Any) -> list[SshHost]:
    from nfu_tui.config import parse_role, parse_ssh_target

    out = []
    for name, h in sorted(cfg.hosts.items()):
        user, address, port = parse_ssh_target(h.ssh)
        out.append(SshHost(name, user, address, port, h.flake_attr, h.repo_dir, h.system, h.test_command,
                           *parse_role(h.role)))
    return out


def git_blob_hash(content: bytes) -> str:
    """What ``git hash-object`` prints for ``content``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()  # noqa: S324 - git's object id


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check(state: str, message: str) -> dict[str, str]:
    return {"status": state, "message": message, "checked_at": _now()}


# ------------------------------------------------------------------ remote scripts (pure)


def probe_script(host: SshHost) -> str:
    """One command that prints ``key=value`` lines: repo head, lock hash, version, health, kernel name
    (Linux | Darwin), the system profile's link (``system-42-link``), boot links."""
    repo = shlex.quote(host.repo_dir)
    version = "darwin-version --json" if host.system == "darwin" else "nixos-version --json"
    lines = [
        f"if cd {repo} 2>/dev/null; then echo \"head=$(git rev-parse HEAD 2>/dev/null)\";"
        " echo \"lock=$(git hash-object flake.lock 2>/dev/null)\"; else echo head=; fi",
        f"echo \"version=$({version} 2>/dev/null | tr -d '\\n')\"",
        "echo \"running=$(systemctl is-system-running 2>/dev/null)\"",
        "echo \"failed=$(systemctl --failed --no-legend --plain 2>/dev/null | awk '{print $1}' | tr '\\n' ' ')\"",
        f"echo \"tests=$(cat {STATE_DIR}/tests 2>/dev/null)\"",
        "echo \"os=$(uname -s 2>/dev/null)\"",
        "echo \"profile=$(readlink /nix/var/nix/profiles/system 2>/dev/null)\"",
    ]
    for link in REBOOT_LINKS:
        lines.append(f"echo \"current_{link}=$(readlink -f /run/current-system/{link} 2>/dev/null)\"")
        lines.append(f"echo \"booted_{link}=$(readlink -f /run/booted-system/{link} 2>/dev/null)\"")
    return "\n".join(lines)


def parse_probe(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def system_generation(link: str) -> int | None:
    """42 from the system profile's link target ``system-42-link`` (None when it is not one)."""
    m = re.fullmatch(r"system-(\d{1,9})-link", link.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def reboot_needed(facts: dict[str, str]) -> tuple[bool | None, str]:
    """(needed, why) from the probe's links; None (unknown) when any link is unreadable."""
    differ = []
    for link in REBOOT_LINKS:
        current, booted = facts.get(f"current_{link}", ""), facts.get(f"booted_{link}", "")
        if not current or not booted:
            return None, f"reboot need unknown: /run/{'current' if not current else 'booted'}-system/{link} unreadable"
        if current != booted:
            differ.append(link)
    if differ:
        return True, f"reboot needed ({', '.join(differ)} differ from the booted system)"
    return False, ""


def op_command(host: SshHost, op: str, target: str = "", branch: str = "") -> str:
    """The shell command of ``op`` on ``host`` (run detached, see :func:`launch_script`)."""
    repo = shlex.quote(host.repo_dir)
    rebuild = "darwin-rebuild" if host.system == "darwin" else "nixos-rebuild"
    if op == "pull":
        return (f"cd {repo} && git fetch origin {shlex.quote(branch)} && git checkout --detach {shlex.quote(target)}"
                f" && test \"$(git rev-parse HEAD)\" = {shlex.quote(target)}")
    if op == "switch":
        return f"{rebuild} switch --flake {shlex.quote(host.repo_dir + '#' + host.attr)}"
    if op == "rollback":
        return f"{rebuild} switch --rollback"
    if op == "test":
        return f"cd {repo} && {host.test_command}"
    raise ValueError(f"unknown op {op!r}")


def launch_script(command_id: str, op: str, command: str, *, preview: bool = False) -> str:
    """Start ``command`` in its own session (survives the SSH session); print its process group id.

    An operation's output goes to ``ID.log`` and it becomes ``last`` (what a new process adopts); a
    ``preview`` keeps its stdout (the facts) apart in ``ID.out`` and is not an operation to adopt."""
    q = shlex.quote
    out = '"$0/$2.out" 2> "$0/$2.log"' if preview else '"$0/$2.log" 2>&1'
    # In a subshell: an ``exit`` in the command must not skip writing its code.
    inner = f'( eval "$1" ) > {out}; echo $? > "$0/$2.rc.tmp"; mv "$0/$2.rc.tmp" "$0/$2.rc"'
    last = "" if preview else f'echo "{command_id} {op} $! $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$d/last"\n'
    return (
        f'd="{STATE_DIR}"; mkdir -p "$d" || exit 97\n'
        f': > "$d/{command_id}.log"\n'
        f'setsid bash -c {q(inner)} "$d" {q(command)} {q(command_id)} < /dev/null > /dev/null 2>&1 &\n'
        f'{last}echo "$!"'
    )


def follow_script(command_id: str, pgid: int, skip: int) -> str:
    return f'tail -n +{skip + 1} -s 0.2 -f --pid={pgid} "{STATE_DIR}/{command_id}.log" 2>/dev/null'


def result_script(command_id: str, pgid: int) -> str:
    """``rc=N`` when finished, ``running`` while the group lives, ``gone`` when it died without a code."""
    return (f'if [ -f "{STATE_DIR}/{command_id}.rc" ]; then echo "rc=$(cat "{STATE_DIR}/{command_id}.rc")";'
            f' elif kill -0 -- -{pgid} 2>/dev/null; then echo running; else echo gone; fi')


def wait_script(command_id: str, pgid: int, seconds: int = 30) -> str:
    """Block until the command's process group leader exits (at most ``seconds``), then :func:`result_script`."""
    return f"timeout {seconds} tail -s 0.2 --pid={pgid} -f /dev/null 2>/dev/null; {result_script(command_id, pgid)}"


def stop_script(pgid: int) -> str:
    return (f"kill -TERM -- -{pgid} 2>/dev/null; for i in $(seq 1 {int(STOP_GRACE * 10)}); do"
            f" kill -0 -- -{pgid} 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL -- -{pgid} 2>/dev/null; exit 0")


def preview_script(host: SshHost, number: int, head_ref: str, sha: str) -> str:
    """Build the PR head's configuration without activating it, then compare it with the running system."""
    q = shlex.quote
    rebuild = "darwin-rebuild" if host.system == "darwin" else "nixos-rebuild"
    return "\n".join([
        f'd="{STATE_DIR}/preview"; rm -rf "$d"; mkdir -p "$d/src" || exit 97',
        f"cd {q(host.repo_dir)} || exit 97",
        f"{{ git fetch -q origin {q(f'pull/{number}/head')} || git fetch -q origin {q(head_ref)}; }} >&2 2>/dev/null",
        f"git archive {q(sha)} | tar -x -C \"$d/src\" || {{ echo 'fetch=failed'; exit 0; }}",
        'cd "$d"',
        f'{rebuild} build --flake "$d/src#{host.attr}" >&2; rc=$?',
        'if [ "$rc" -gt 128 ]; then echo "build=killed $((rc - 128))"; exit 0; fi',  # a signal: no verdict
        'if [ "$rc" -ne 0 ]; then echo "build=failed"; exit 0; fi',
        'echo "build=ok"',
        'nix store diff-closures /run/current-system ./result 2>/dev/null | sed "s/^/diff=/"',
        *(f'echo "new_{link}=$(readlink -f ./result/{link} 2>/dev/null)"; '
          f'echo "booted_{link}=$(readlink -f /run/booted-system/{link} 2>/dev/null)"' for link in REBOOT_LINKS),
    ])


@dataclass(frozen=True, slots=True)
class PackageChange:
    name: str
    change: str  # e.g. "140.0.4 → 140.0.5", "∅ → 1.2"
    size_kib: float | None = None
    security_ids: tuple[str, ...] = ()  # set from the PR's changelog (core/preview.py)


BUILD_FAILED = "the configuration does not build"


@dataclass(frozen=True, slots=True)
class HostPreview:
    """What merging a PR would change on one host (built, never activated)."""

    host: str
    ok: bool
    problem: str = ""  # why there is no preview: unreachable, fetch or build failed
    changes: tuple[PackageChange, ...] = ()
    reboot_needed: bool | None = None
    reboot_why: str = ""
    last_lines: tuple[str, ...] = ()

    @property
    def size_kib(self) -> float:
        return sum(c.size_kib or 0.0 for c in self.changes)

    @property
    def build_failed(self) -> bool:
        """The host answered and its build failed: evidence, unlike an unreachable host."""
        return not self.ok and self.problem == BUILD_FAILED


def parse_diff_closures(lines: Iterable[str]) -> list[PackageChange]:
    """``nix store diff-closures`` lines (``firefox: 140.0.4 → 140.0.5, +1228.8 KiB``) as changes."""
    out = []
    for line in lines:
        name, sep, rest = sanitize_line(line).partition(": ")
        if not sep or not name.strip():
            continue
        change, _, size = rest.rpartition(", ")
        size_kib = None
        if size.endswith(" KiB"):
            try:
                size_kib = float(size[:-4])
            except ValueError:
                change = rest
        else:
            change = rest
        out.append(PackageChange(name.strip(), change.strip(), size_kib))
    return out


def preview_unavailable(host: str, why: str) -> str:
    """The problem of a preview that has no verdict (no evidence either way: never blocks a merge)."""
    return f"preview unavailable for {host} ({why})"


def preview_from(host: str, stdout: str, stderr: str, *, darwin: bool = False) -> HostPreview:
    """The preview script's answer. Only ``build=failed`` (the build itself failed) is a build failure; a
    build killed by a signal, or a script that ended without saying, leaves the preview unavailable.
    A ``darwin`` host has no booted system to compare: no reboot need is told."""
    facts = parse_probe(stdout)
    tail = tuple(sanitize_line(x) for x in stderr.splitlines()[-12:])
    build = facts.get("build", "")
    if facts.get("fetch") == "failed":
        return HostPreview(host, False, "the PR head could not be fetched on the host", last_lines=tail)
    if build == "failed":
        return HostPreview(host, False, BUILD_FAILED, last_lines=tail)
    if build != "ok":
        why = (f"the build was killed by signal {build.split()[-1]}" if build.startswith("killed")
               else "the preview ended without a result")
        return HostPreview(host, False, preview_unavailable(host, why), last_lines=tail)
    diff = [line[5:] for line in stdout.splitlines() if line.startswith("diff=")]
    links = {k.replace("new_", "current_"): v for k, v in facts.items() if k.startswith(("new_", "booted_"))}
    needed, why = reboot_needed(links) if not darwin else (None, "")
    return HostPreview(host, True, changes=tuple(parse_diff_closures(diff)), reboot_needed=needed, reboot_why=why)


# ------------------------------------------------------------------ the backend


class _KeyCheck(asyncssh.SSHClient):
    """Records the host key the server offered when it is not trusted (to name its fingerprint)."""

    def __init__(self) -> None:
        self.offered: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = key
        return False  # never accept a key that known_hosts does not hold


@dataclass
class _Running:
    command: Command
    pgid: int
    lines: int = 0
    stopping: bool = False
    failed_before: frozenset[str] = frozenset()
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class SshFleet:
    """See the module docstring. A :class:`~nfu_tui.backends.base.FleetBackend`, like the DashboardClient."""

    info = SSH
    needs_password = False
    dashboard_version: str | None = None

    def __init__(self, hosts: Iterable[SshHost], *, known_hosts: Path, identity_file: Path | None = None,
                 poll_seconds: float = 30.0, connect_timeout: float = 10.0, max_concurrency: int = 8,
                 github: Any = None, branch: str = "") -> None:
        self.hosts = {h.name: h for h in hosts}
        self.known_hosts = Path(known_hosts).expanduser()
        self.identity_file = Path(identity_file).expanduser() if identity_file else None
        self.poll_seconds = poll_seconds
        self.connect_timeout = connect_timeout
        self._limit = asyncio.Semaphore(max_concurrency)
        self.github = github
        self.branch = branch
        self._target: tuple[str, str] = ("", "")  # (branch head sha, its flake.lock blob hash)
        self._lock_hashes: dict[str, str] = {}
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._rows: dict[str, dict[str, Any]] = {h.name: self._initial_row(h) for h in self.hosts.values()}
        self._commands: dict[str, Command] = {}
        self._running: dict[str, _Running] = {}  # host → its running command
        self._failed_units: dict[str, frozenset[str]] = {}
        self._facts: dict[str, dict[str, str]] = {}  # host → its last probe's facts
        self._asked: set[str] = set()  # hosts asked for a previous process's command
        self._version = 0
        self._queue: asyncio.Queue[tuple[str, Any]] | None = None
        self._probe_now = asyncio.Event()
        self._checks: dict[str, asyncio.Task[None]] = {}  # host → its refresh-system probe under way

    @classmethod
    def from_config(cls, cfg: Any, github: Any = None) -> "SshFleet":
        s = cfg.ssh
        return cls(hosts_from_config(cfg), known_hosts=s.known_hosts, identity_file=s.identity_file,
                   poll_seconds=s.poll_seconds, connect_timeout=s.connect_timeout,
                   max_concurrency=s.max_concurrency, github=github)

    # --- the FleetBackend surface ------------------------------------------------

    async def __aenter__(self) -> "SshFleet":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for running in self._running.values():  # stop following; the commands run on (a new process adopts them)
            if running.task is not None:
                running.task.cancel()
        for task in self._checks.values():
            task.cancel()
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        if self.github is not None and hasattr(self.github, "aclose"):
            with contextlib.suppress(Exception):
                await self.github.aclose()

    def set_password(self, password: Any) -> None:  # no password: keys come from the agent or identity_file
        return None

    async def login(self, *, totp_code: str | None = None) -> None:
        """Nothing to log in to: every connection authenticates with the SSH key and checks the host key."""
        return None

    async def request_state(self) -> bool:
        self._probe_now.set()
        return True

    async def full_state(self) -> FleetSnapshot:
        """Probe every host once (for ``nfu-tui status``)."""
        await self.probe_all()
        model = FleetModel()
        model.apply(self._init_message())
        return model.snapshot()

    async def follow(self, model: FleetModel) -> AsyncIterator[tuple[Any, list[FleetChange]]]:
        """The fleet as stream events: an ``init``, then a delta per change, probing every poll."""
        self._queue = asyncio.Queue()
        yield Connected(url="ssh"), model.apply_event(Connected(url="ssh"))
        # The init below holds what the first probes found; a host slower than FIRST_PROBE_WAIT stays
        # "unknown" in it and is filled in by the delta its probe sends when it ends.
        first = asyncio.ensure_future(self.probe_all())
        await asyncio.wait({first}, timeout=FIRST_PROBE_WAIT)
        while not self._queue.empty():
            self._queue.get_nowait()
        message = self._init_message()
        yield Message(message), model.apply(message)
        poller = asyncio.create_task(self._poll_loop(first), name="nfu-ssh-poll")
        try:
            while True:
                kind, item = await self._queue.get()
                if kind == "output":
                    host, command_id, op, lines = item
                    yield (Message({"type": "command_output", "payload": {"host_id": host}}),
                           model.add_output(host, lines, command_id=command_id, op=op))
                else:
                    yield Message(item), model.apply(item)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            self._queue = None

    async def dispatch(self, op: str, hosts: list[str], *, force: bool = False, totp: str | None = None
                       ) -> list[DispatchResult]:
        return [await self._dispatch_one(op, name) for name in hosts]

    async def timeout_action(self, host: str, action: str, minutes: int | None = None) -> None:
        """``ignore``/``kill``: stop the host's running command for real (its process group); ``wait`` is a no-op."""
        if action == "wait":
            return
        running = self._running.get(host)
        if running is None:
            raise SshError(f"{host}: no command is running")
        running.stopping = True
        await self._run(host, stop_script(running.pgid), timeout=STOP_GRACE + 10)

    async def command_states(self) -> dict[str, Command]:
        """Host → its newest command; hosts this process started nothing on are asked (``last``)."""
        out: dict[str, Command] = {}
        for cmd in self._commands.values():
            if cmd.host_id not in out or (cmd.created_at, cmd.id) >= (out[cmd.host_id].created_at, out[cmd.host_id].id):
                out[cmd.host_id] = cmd
        # Asked once per host and process (only a previous process can have left a command there).
        unknown = [name for name in self.hosts if name not in out and name not in self._asked]
        found = await asyncio.gather(*(self._adopt(name) for name in unknown), return_exceptions=True)
        for name, cmd in zip(unknown, found):
            if not isinstance(cmd, BaseException):
                self._asked.add(name)
            if isinstance(cmd, Command):
                out[name] = cmd
        return out

    async def events(self, limit: int = 100, host: str | None = None) -> list[dict[str, Any]]:
        """SSH hosts keep no event log: a dispatch whose answer was lost is found by :meth:`command_states`
        (the host's ``last`` file)."""
        return []

    async def output(self, host: str, lines: int = 500, *, bare: bool = False) -> list[str]:
        """The last ``lines`` lines of the newest command's log on ``host`` (``last``), sanitized.

        The same call as the dashboard's ``GET /api/hosts/{id}/output``, so that the engine's
        backfill of a finished command's tail works on both backends; the log holds only the
        command's output (``bare`` changes nothing here).
        """
        lines = max(1, min(int(lines), 10_000))
        done = await self._run(host, f'f="{STATE_DIR}/$(cut -d" " -f1 "{STATE_DIR}/last" 2>/dev/null).log"; '
                                     f'[ -f "$f" ] && tail -n {lines} "$f"')
        return [sanitize_line(x) for x in str(done.stdout or "").splitlines()]

    async def preview(self, name: str, number: int, head_ref: str, sha: str, *, timeout: float = 3600.0
                      ) -> HostPreview:
        """Build PR ``number``'s head ``sha`` on host ``name`` (not activated) and diff it with the running system.

        The build runs detached on the host, like the operations: a dropped session does not stop it, and
        its result is read after a reconnect. A host that stays unreachable for ``RECONNECT_WINDOW`` s (or
        a build past ``timeout``) leaves the preview unavailable, never a build failure; cancelling stops the
        build on the host."""
        command_id = f"preview-{uuid.uuid4().hex[:16]}"
        script = preview_script(self.hosts[name], number, head_ref, sha)
        try:
            pgid = int(str((await self._run(name, launch_script(command_id, "preview", script, preview=True))
                            ).stdout or "").strip().splitlines()[-1])
        except SshError as exc:
            return HostPreview(name, False, exc.message)
        except (ValueError, IndexError):
            return HostPreview(name, False, preview_unavailable(name, "the build could not be started"))
        loop = asyncio.get_running_loop()
        deadline, lost_since = loop.time() + timeout, None
        try:
            while True:
                try:
                    state = str((await self._run(name, wait_script(command_id, pgid), bounded=False)).stdout
                                or "").strip()
                    lost_since = None
                except SshError:  # the build runs on: reconnect and read its result
                    lost_since = lost_since or loop.time()
                    if loop.time() - lost_since > RECONNECT_WINDOW:
                        return HostPreview(name, False, preview_unavailable(name, "connection lost"))
                    await asyncio.sleep(1.0)
                    continue
                if state != "running":
                    break
                if loop.time() > deadline:
                    await self._run(name, stop_script(pgid), timeout=STOP_GRACE + 10)
                    return HostPreview(name, False, preview_unavailable(name, f"no result within {timeout:g} s"))
            files = f'"{STATE_DIR}/{command_id}"'
            done = await self._run(name, f"cat {files}.out; tail -n 12 {files}.log >&2; rm -f {files}.*")
        except SshError:
            return HostPreview(name, False, preview_unavailable(name, "connection lost"))
        except asyncio.CancelledError:  # closed in the TUI: stop the build on the host (best effort)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._run(name, stop_script(pgid), timeout=STOP_GRACE + 10))
            raise
        return preview_from(name, str(done.stdout or ""), str(done.stderr or ""),
                            darwin=self.hosts[name].system == "darwin")

    # --- connections ----------------------------------------------------------------

    async def _connect(self, name: str) -> asyncssh.SSHClientConnection:
        conn = self._conns.get(name)
        if conn is not None and not conn.is_closed():
            return conn
        lock = self._connecting.setdefault(name, asyncio.Lock())
        async with lock:
            conn = self._conns.get(name)
            if conn is not None and not conn.is_closed():
                return conn
            self._conns[name] = conn = await self._open(self.hosts[name])
            return conn

    async def _open(self, host: SshHost) -> asyncssh.SSHClientConnection:
        if not self.known_hosts.is_file():
            raise SshError(f"{host.name}: known_hosts file {self.known_hosts} does not exist; refusing to connect "
                           "without checking the host key")
        check = _KeyCheck()
        options: dict[str, Any] = {"known_hosts": str(self.known_hosts), "username": host.user,
                                   "connect_timeout": self.connect_timeout, "keepalive_interval": 15}
        if self.identity_file is not None:
            options["client_keys"] = [str(self.identity_file)]
        try:
            conn, _ = await asyncssh.create_connection(lambda: check, host.address, host.port, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyRefused(self._key_message(host, check.offered, exc)) from None
        except asyncssh.PermissionDenied:
            raise SshError(f"{host.name} ({host.where}): authentication refused (check the SSH agent or "
                           "ssh.identity_file)") from None
        except (asyncssh.KeyImportError, ValueError) as exc:  # e.g. a passphrase-protected identity_file
            raise SshError(f"{host.name}: cannot use ssh.identity_file {self.identity_file}: {exc} (use the SSH "
                           "agent for a key with a passphrase)") from None
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
            if isinstance(exc, asyncio.TimeoutError):
                reason = f"timed out after {self.connect_timeout:g} s"
            elif isinstance(exc, OSError) and exc.errno:  # "Connection refused", not asyncio's "Connect call failed"
                reason = os.strerror(exc.errno)
            else:
                reason = getattr(exc, "reason", "") or getattr(exc, "strerror", "") or str(exc) or type(exc).__name__
            raise SshError(f"{host.name} ({host.where}) unreachable: {sanitize_line(str(reason), max_len=200)}") from None
        return conn

    def _key_message(self, host: SshHost, key: asyncssh.SSHKey | None, exc: Exception) -> str:
        if key is None:
            return f"{host.name} ({host.where}): host key not verifiable ({exc}); refused"
        fingerprint = key.get_fingerprint("sha256")
        try:
            trusted = asyncssh.read_known_hosts(str(self.known_hosts)).match(host.address, "", host.port)[0]
        except (OSError, ValueError):
            trusted = []
        if trusted:
            return (f"{host.name} ({host.where}): host key CHANGED — it offered {key.get_algorithm()} {fingerprint}, "
                    f"which {self.known_hosts} does not hold for it; refused (verify the host, then fix known_hosts)")
        return (f"{host.name} ({host.where}): unknown host key {key.get_algorithm()} {fingerprint} — not in "
                f"{self.known_hosts}; refused (verify the fingerprint, then add it to known_hosts)")

    def _drop(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            conn.close()

    async def _run(self, name: str, script: str, *, timeout: float = 60.0, bounded: bool = True
                   ) -> asyncssh.SSHCompletedProcess:
        """One short command (bounded by ``timeout``, and by the concurrency limit unless ``bounded`` is False:
        then only its connect is, for a command that mostly waits)."""
        async with self._limit:
            conn = await self._connect(name)
            if bounded:
                return await self._exec(name, conn, script, timeout)
        return await self._exec(name, conn, script, timeout)

    async def _exec(self, name: str, conn: asyncssh.SSHClientConnection, script: str, timeout: float
                    ) -> asyncssh.SSHCompletedProcess:
        try:
            done = await asyncio.wait_for(conn.run(script, check=False, errors="replace"), timeout)
            if done.exit_status is None:  # neither an exit status nor a signal: the session was torn down
                raise ConnectionLost(f"{name}: connection lost (the session ended without an exit status)")
            return done
        except asyncio.TimeoutError:
            self._drop(name)
            raise SshError(f"{name}: no answer within {timeout:g} s") from None
        except ConnectionLost:
            self._drop(name)
            raise
        except (OSError, asyncssh.Error) as exc:
            self._drop(name)
            raise ConnectionLost(f"{name}: connection lost ({exc or type(exc).__name__})") from None

    # --- probing ----------------------------------------------------------------------

    async def _poll_loop(self, first: asyncio.Future[None]) -> None:
        """Probe every ``poll_seconds`` (or at once on :meth:`request_state`) once the ``first`` round ended."""
        try:
            with contextlib.suppress(Exception):
                await first
        finally:
            first.cancel()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._probe_now.wait(), self.poll_seconds)
            self._probe_now.clear()
            try:
                await self.probe_all()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep polling; the rows say what went wrong per host
                log.exception("SSH probe round failed")

    async def probe_all(self) -> None:
        await self._refresh_target()
        await asyncio.gather(*(self.probe(name) for name in self.hosts))

    async def _refresh_target(self) -> None:
        if self.github is None:
            return
        try:
            self.branch = self.branch or await self.github.default_branch()
            head = await self.github.branch_head(self.branch)
            if head not in self._lock_hashes:
                self._lock_hashes[head] = git_blob_hash(await self.github.file_at("flake.lock", head))
            self._target = (head, self._lock_hashes[head])
        except Exception as exc:  # GitHub down: Git/Lock turn unknown, the rest goes on
            log.info("SSH backend: default branch head unavailable: %s", exc)
            self._target = ("", "")

    async def probe(self, name: str) -> None:
        host = self.hosts[name]
        try:
            try:
                done = await self._run(name, probe_script(host), timeout=self.connect_timeout + 30)
            except ConnectionLost:  # the reused connection had died since: once more, on a new one (reads only)
                done = await self._run(name, probe_script(host), timeout=self.connect_timeout + 30)
        except SshError as exc:
            self._unreachable(name, exc)
            return
        facts = self._facts[name] = parse_probe(str(done.stdout or ""))
        self._update(name, self._row_from(host, facts))

    def _unreachable(self, name: str, exc: SshError) -> None:
        """Agent ``unreachable`` with the reason; a refused host key is an ``error`` (a security signal, not a
        network blip: logged as a warning too). The other compartments keep what the host last said."""
        loud = isinstance(exc, HostKeyRefused)
        row = self._rows[name]
        if loud and (row["update_status"].get("agent") or {}).get("message") != exc.message:
            log.warning("%s", exc.message)
        checks = {"agent": _check("error" if loud else "unreachable", exc.message)}
        if not row.get("last_seen"):  # never reached: "not probed yet" would say the probe is still to come
            checks |= {k: _check("unknown", "the host was never reached") for k in ("git", "lock", "system")}
        self._update(name, {"status": "offline", "update_status": checks}, reachable=False)

    def _row_from(self, host: SshHost, facts: dict[str, str]) -> dict[str, Any]:
        head, lock = facts.get("head", ""), facts.get("lock", "")
        target, target_lock = self._target
        branch = self.branch or "the default branch"
        if not head:
            git = _check("error", f"{host.repo_dir} is not a git checkout")
        elif not target:
            git = _check("unknown", f"at {head[:7]}; {branch} head unknown (GitHub not reachable)")
        else:
            git = _check("ok" if head == target else "outdated",
                         f"at {head[:7]}" + ("" if head == target else f"; {branch} is at {target[:7]}"))
        if not lock or not target_lock:
            lock_check = _check("unknown", "flake.lock hash unknown")
        else:
            lock_check = _check("ok" if lock == target_lock else "outdated",
                                "flake.lock as on " + branch if lock == target_lock else f"flake.lock differs from {branch}")
        try:
            version = json.loads(facts.get("version") or "{}")
        except ValueError:
            version = {}
        revision = str(version.get("configurationRevision") or "") if isinstance(version, dict) else ""
        running = facts.get("running", "")
        failed = frozenset(facts.get("failed", "").split())
        self._failed_units[host.name] = failed
        kernel = facts.get("os", "")
        host_type = {"Darwin": "macos", "Linux": "nixos"}.get(kernel, host.host_type)
        # nix-darwin has no /run/booted-system (macOS updates its kernel itself): no reboot need to tell
        needed, why = reboot_needed(facts) if host_type != "macos" else (None, "")
        if running == "degraded":
            system = _check("error", f"degraded: failed units {', '.join(sorted(failed)) or '(none listed)'}")
        elif not revision:
            system = _check("unknown", f"{running or 'state unknown'}; configurationRevision not reported")
        elif head and revision == head:
            system = _check("ok", f"{running}; runs {revision[:7]}")
        else:
            system = _check("outdated", f"{running}; runs {revision[:7]}, checkout is {head[:7] or '?'}")
        if why:
            system["message"] += f"; {why}"
        reachable = f"reachable over SSH ({host.where})"
        if host_type != host.host_type:
            reachable += f"; it runs {kernel}, but its system setting is {host.system!r}"
        row: dict[str, Any] = {"status": "online", "generation": head, "last_seen": _now(),
                               "nixpkgs_version": str(version.get("nixosVersion") or "") if isinstance(version, dict) else "",
                               "reboot_needed": needed, "host_type": host_type,
                               "system_generation": system_generation(facts.get("profile", "")),
                               "update_status": {"agent": _check("ok", reachable), "git": git, "lock": lock_check,
                                                 "system": system}}
        tests = facts.get("tests", "")
        if tests:
            ok = tests.split()[0] == "0"
            row["update_status"]["tests"] = _check("ok" if ok else "error", "tests passed" if ok else "tests failed")
        if host.name in self._running:  # a command is running: do not paint over its progress
            row["update_status"]["system"] = _check("working", f"{self._running[host.name].command.op} running")
        return row

    # --- model messages --------------------------------------------------------------

    def _initial_row(self, host: SshHost) -> dict[str, Any]:
        return {"id": host.name, "hostname": host.name, "host_type": host.host_type, "device_type": host.device_type,
                "location": host.location, "status": "unknown", "system_generation": None,
                "agent_version": AGENT_VERSION, "agent_outdated": False, "pending_command": "",
                "repo_url": "", "repo_dir": host.repo_dir, "reboot_needed": None,
                "update_status": {k: _check("unknown", "not probed yet") for k in ("agent", "git", "lock", "system")}
                | {"tests": _check("unknown", "no test result yet")}}

    def _init_message(self) -> dict[str, Any]:
        return {"type": "init", "version": self._version, "payload": {
            "hosts": [self._rows[n] for n in self.hosts],
            "commands": [self._command_json(c) for c in self._commands.values()]}}

    def _emit(self, change: dict[str, Any]) -> None:
        self._version += 1
        if self._queue is not None:
            self._queue.put_nowait(("message", {"type": "delta", "version": self._version, "payload": change}))

    def _update(self, name: str, fields: dict[str, Any], *, reachable: bool = True) -> None:
        row = self._rows[name]
        status = dict(row.get("update_status") or {})
        status.update(fields.get("update_status") or {})
        row.update(fields)
        row["update_status"] = status
        row["agent_version"] = AGENT_VERSION if reachable else ""
        self._emit({"type": "host_updated", "id": name, "fields": dict(row)})

    @staticmethod
    def _command_json(cmd: Command) -> dict[str, Any]:
        return {"id": cmd.id, "host_id": cmd.host_id, "op": cmd.op, "status": cmd.status,
                "created_at": cmd.created_at, "started_at": cmd.started_at, "finished_at": cmd.finished_at,
                "exit_code": cmd.exit_code, "error": cmd.error}

    def _put_command(self, cmd: Command) -> None:
        kind = "command_finished" if cmd.terminal else "command_started"
        self._commands[cmd.id] = cmd
        running = self._running.get(cmd.host_id)
        if cmd.terminal and running is not None and running.command.id == cmd.id:
            self._running.pop(cmd.host_id)
        self._update(cmd.host_id, {"pending_command": "" if cmd.terminal else cmd.op})
        self._emit({"type": kind, "id": cmd.id, "payload": self._command_json(cmd), "fields": self._command_json(cmd)})

    def _output(self, host: str, cmd: Command, lines: list[str]) -> None:
        if self._queue is not None and lines:
            self._queue.put_nowait(("output", (host, cmd.id, cmd.op, [sanitize_line(x) for x in lines])))

    # --- operations -------------------------------------------------------------------

    async def _dispatch_one(self, op: str, name: str) -> DispatchResult:
        host = self.hosts.get(name)
        if host is None:
            return DispatchResult(name, "error", message="Host not found")
        if name in self._running or name in self._checks:  # one command per host, as on the dashboard
            running = self._running[name].command.op if name in self._running else REFRESH_SYSTEM
            return DispatchResult(name, "blocked", code="busy", message=f"{running} running")
        if op == REFRESH_SYSTEM:
            return self._refresh_system(name)
        if op not in OPS:
            return DispatchResult(name, "blocked", code="unsupported", message=f"{op} is not supported over SSH")
        target = ""
        if op == "pull":
            await self._refresh_target()
            target = self._target[0]
            if not target:
                return DispatchResult(name, "blocked", code="no_target",
                                      message="the default branch head is unknown (GitHub not reachable)")
        if op == "test" and not host.test_command:
            return DispatchResult(name, "blocked", code="no_tests", message="no test_command configured for the host")
        command_id = f"ssh-{uuid.uuid4().hex[:16]}"  # also a file name and a shell word on the host
        try:
            if op == "switch":  # units failing already are not the switch's fault
                await self.probe(name)
            failed_before = self._failed_units.get(name, frozenset())
            done = await self._run(name, launch_script(command_id, op, op_command(host, op, target, self.branch)))
        except SshError as exc:
            return DispatchResult(name, "blocked", code="offline", message=exc.message)
        try:
            pgid = int(str(done.stdout or "").strip().splitlines()[-1])
        except (ValueError, IndexError):
            return DispatchResult(name, "error", message=f"{op} could not be started (exit {done.exit_status})")
        now = _now()
        cmd = Command(command_id, name, op, "EXECUTING", created_at=now, started_at=now)
        self._start_following(cmd, pgid, failed_before)
        return DispatchResult(name, "started", status="EXECUTING", command_id=command_id)

    def _refresh_system(self, name: str) -> DispatchResult:
        """``refresh-system``: probe the host now; the command ends SUCCESS with the fresh System state as its
        output, or ERROR saying why the host could not be checked."""
        now = _now()
        cmd = Command(f"ssh-{uuid.uuid4().hex[:16]}", name, REFRESH_SYSTEM, "EXECUTING", created_at=now, started_at=now)
        self._put_command(cmd)

        async def check() -> None:
            self._facts.pop(name, None)
            try:
                await self.probe(name)  # an unreachable host is reported by the probe itself
            except Exception:  # never leave the command EXECUTING because of a bug here
                log.exception("refresh-system on %s failed", name)
            finally:
                self._checks.pop(name, None)  # free before the command ends: the next op may follow at once
            checks = self._rows[name]["update_status"]
            if name in self._facts:
                status, code, error = "SUCCESS", 0, ""
                self._output(name, cmd, [f"System {checks['system']['status']}: {checks['system']['message']}"])
            else:
                status, code, error = "ERROR", None, f"could not check the host: {checks['agent']['message']}"
            self._put_command(Command(cmd.id, name, cmd.op, status, cmd.created_at, cmd.started_at, _now(), code,
                                      error))

        self._checks[name] = asyncio.create_task(check(), name=f"nfu-ssh-{cmd.id}")
        return DispatchResult(name, "started", status="EXECUTING", command_id=cmd.id)

    def _start_following(self, cmd: Command, pgid: int, failed_before: frozenset[str], lines: int = 0) -> None:
        running = _Running(cmd, pgid, lines, failed_before=failed_before)
        self._running[cmd.host_id] = running
        self._put_command(cmd)
        self._update(cmd.host_id, {"update_status": {"system": _check("working", f"{cmd.op} running")}}
                     if cmd.op in ("switch", "rollback") else {})
        running.task = asyncio.create_task(self._follow_command(running), name=f"nfu-ssh-{cmd.id}")

    async def _follow_command(self, running: _Running) -> None:
        try:
            await self._follow_to_end(running)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave a command EXECUTING forever because of a bug here
            log.exception("following %s failed", running.command.id)
            cmd = running.command
            self._put_command(Command(cmd.id, cmd.host_id, cmd.op, "ERROR", cmd.created_at, cmd.started_at, _now(),
                                      None, f"nfu-tui lost track of it ({exc!r}); verify the host"))

    async def _follow_to_end(self, running: _Running) -> None:
        cmd = running.command
        name = cmd.host_id
        delay = 1.0
        while True:
            try:
                await self._tail(running)
                state = str((await self._run(name, result_script(cmd.id, running.pgid))).stdout or "").strip()
            except SshError as exc:  # the host went away: the command runs on; keep trying
                self._unreachable(name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
                await self.probe(name)  # reachable again: shown at once, not at the next poll
                continue
            if state == "running":  # tail ended early (log removed?): follow again, without spinning
                await asyncio.sleep(1.0)
                continue
            break
        if state.startswith("rc="):
            try:
                code = int(state[3:])
            except ValueError:
                code = -1
            status, error = ("SUCCESS", "") if code == 0 else ("ERROR", f"exit {code}")
            if running.stopping:
                status, error = "KILLED", "stopped on request (its process group was terminated)"
        else:
            code = None
            status = "KILLED" if running.stopping else "ERROR"
            error = ("stopped on request (its process group was terminated)" if running.stopping
                     else "the command ended without an exit code (killed on the host?)")
        if status == "SUCCESS" and cmd.op in ("switch", "rollback"):
            status, error = await self._verify(cmd.op, name, running.failed_before)
        if cmd.op == "test" and status in ("SUCCESS", "ERROR"):
            with contextlib.suppress(SshError):
                await self._run(name, f'echo {code if code is not None else 1} > "{STATE_DIR}/tests"')
        self._put_command(Command(cmd.id, name, cmd.op, status, cmd.created_at, cmd.started_at, _now(), code, error))
        await self.probe(name)

    async def _tail(self, running: _Running) -> None:
        cmd = running.command
        async with self._limit:
            conn = await self._connect(cmd.host_id)
        try:
            async with conn.create_process(follow_script(cmd.id, running.pgid, running.lines), errors="replace") as proc:
                async for line in proc.stdout:
                    running.lines += 1
                    self._output(cmd.host_id, cmd, [line])
        except (OSError, asyncssh.Error) as exc:
            self._drop(cmd.host_id)
            raise ConnectionLost(f"{cmd.host_id}: lost the connection while following {cmd.op}: {exc}") from None

    async def _verify(self, op: str, name: str, failed_before: frozenset[str] | None) -> tuple[str, str]:
        """After exit 0: the host must run its checkout's commit, with no newly failed unit
        (``failed_before`` None: what failed before is not known, units are not judged)."""
        self._facts.pop(name, None)
        await self.probe(name)
        facts = self._facts.get(name)
        if facts is None:
            return "ERROR", f"{op} exited 0 but the host could not be checked afterwards; verify it"
        failed = self._failed_units.get(name, frozenset())
        new = sorted(failed - failed_before) if failed_before is not None else []
        if new:
            return "ERROR", f"{op} exited 0 but the system is degraded: newly failed units {', '.join(new)}"
        if op == "switch":
            head = facts.get("head", "")
            try:
                revision = str(json.loads(facts.get("version") or "{}").get("configurationRevision") or "")
            except (ValueError, AttributeError):
                revision = ""
            if not head or revision != head:
                return "ERROR", (f"switch exited 0 but the host runs {revision[:7] or 'an unknown revision'}, not the "
                                 f"checked-out commit {head[:7] or '?'}")
        return "SUCCESS", ""

    async def _adopt(self, name: str) -> Command | None:
        """The newest command a previous process started on ``name`` (``last``), followed again if it runs."""
        done = await self._run(name, f'cat "{STATE_DIR}/last" 2>/dev/null')
        parts = str(done.stdout or "").split()
        if len(parts) < 4 or parts[1] not in OPS:
            return None
        command_id, op, pgid, started = parts[0], parts[1], int(parts[2]), parts[3]
        if command_id in self._commands:
            return self._commands[command_id]
        state = str((await self._run(name, result_script(command_id, pgid))).stdout or "").strip()
        cmd = Command(command_id, name, op, "EXECUTING", created_at=started, started_at=started)
        if state == "running":
            self._start_following(cmd, pgid, self._failed_units.get(name, frozenset()))
            return cmd
        code = int(state[3:]) if state.startswith("rc=") and state[3:].lstrip("-").isdigit() else None
        status = "SUCCESS" if code == 0 else "ERROR"
        if status == "SUCCESS" and op in ("switch", "rollback"):
            status, error = await self._verify(op, name, None)
        else:
            error = "" if code == 0 else (f"exit {code}" if code is not None else "ended without an exit code")
        finished = Command(command_id, name, op, status, started, started, _now(), code, error)
        self._commands[command_id] = finished
        self._emit({"type": "command_finished", "id": command_id, "fields": self._command_json(finished)})
        return finished


__all__ = ["HostKeyRefused", "HostPreview", "PackageChange", "SshError", "SshFleet", "SshHost", "hosts_from_config",
           "parse_diff_closures"]
