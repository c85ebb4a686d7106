"""Simulated NixOS hosts reached over SSH: stand-in nix tools, per-host state, an in-process SSH server.

A host is a directory: ``bin/`` holds stand-in ``nixos-rebuild`` / ``darwin-rebuild``,
``nixos-version`` / ``darwin-version``, ``systemctl`` and ``readlink`` (which maps
``/run/…`` into the host's ``state/``); ``repo/`` is a real git clone of the bare
repository exported from the fake GitHub (same commit SHAs); ``state/`` holds the
generations (each with its configuration revision and kernel), the current and booted
system links and the failed units. Commands run with ``PATH``, ``HOME`` and
``NFU_STATE`` pointing there — through real ``sshd`` (``SetEnv``, in the tests) or
through :class:`SshHostsServer` (asyncssh, for ``nfu-tui demo --backend ssh``).

The system profile (``/nix/var/nix/profiles/system`` → ``system-N-link``) lives in
``state/profiles/``. Knobs (files in ``state/``): ``fail-build`` (the build fails), ``closure-diff`` (what
``nix store diff-closures`` prints besides the kernel's change), ``switch-steps`` (0.1 s
build steps, default 2), ``next-kernel`` (the next switch's kernel), ``failed-units``
(units failing now), ``units-fail-after-switch`` (failing after the next switch).

Imports nothing of the clients or core (only asyncssh for the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NIXOS_REBUILD = r"""#!/usr/bin/env bash
set -u
S="$NFU_STATE"
mode="$1"; shift  # switch | build
flake=""; rollback=0
while [ $# -gt 0 ]; do case "$1" in --flake) flake="$2"; shift 2;; --rollback) rollback=1; shift;; *) shift;; esac; done
echo "building the system configuration..." >&2
[ "$mode" = build ] && echo "$PWD" >> "$S/builds"  # previews: counted, so tests can see a cached result reused
echo $$ > "$S/switch-pid"
steps=$(cat "$S/switch-steps" 2>/dev/null || echo 2)
for i in $(seq 1 "$steps"); do echo "building [$i/$steps] /nix/store/x$i-unit.drv" >&2; sleep 0.1; done
if [ -f "$S/fail-build" ]; then echo "error: builder for '/nix/store/abc-nixos-system.drv' failed with exit code 1" >&2; exit 1; fi
gen=$(cat "$S/gen")
if [ "$mode" = build ]; then  # ./result, nothing activated
  k=$(cat "$S/next-kernel" 2>/dev/null || cat "$S/store/sys-$gen/kname")
  out="$S/store/build-$$"; mkdir -p "$out"; echo "$k" > "$out/kname"
  for f in kernel initrd kernel-modules; do touch "$S/store/$f-$k"; ln -s "../$f-$k" "$out/$f"; done
  ln -sfn "$out" result
  exit 0
fi
if [ "$rollback" = 1 ]; then
  [ "$gen" -gt 1 ] || { echo "error: no previous generation" >&2; exit 1; }
  new=$((gen - 1))
  echo "switching to generation $new (rollback)"
else
  rev=$(git -C "${flake%%#*}" rev-parse HEAD) || exit 1
  new=$(( $(ls -d "$S"/store/sys-* | wc -l) + 1 ))
  k=$(cat "$S/next-kernel" 2>/dev/null || cat "$S/store/sys-$gen/kname")
  mkdir -p "$S/store/sys-$new"
  echo "$rev" > "$S/store/sys-$new/rev"; echo "$k" > "$S/store/sys-$new/kname"
  for f in kernel initrd kernel-modules; do touch "$S/store/$f-$k"; ln -s "../$f-$k" "$S/store/sys-$new/$f"; done
  echo "activating the configuration (generation $new, ${flake#*#})..."
fi
ln -sfn "$S/store/sys-$new" "$S/run/current-system"
ln -sfn "$S/store/sys-$new" "$S/profiles/system-$new-link"; ln -sfn "system-$new-link" "$S/profiles/system"
echo "$new" > "$S/gen"
[ -f "$S/units-fail-after-switch" ] && mv "$S/units-fail-after-switch" "$S/failed-units"
echo done >> "$S/switches"
exit 0
"""

NIXOS_VERSION = r"""#!/usr/bin/env bash
rev=$(cat "$NFU_STATE/run/current-system/rev" 2>/dev/null)
printf '{"configurationRevision":"%s","nixosVersion":"25.05.20250601.abcdef0"}\n' "$rev"
"""

SYSTEMCTL = r"""#!/usr/bin/env bash
f="$NFU_STATE/failed-units"
case "$1" in
  is-system-running) if [ -s "$f" ]; then echo degraded; exit 1; fi; echo running ;;
  --failed) [ -s "$f" ] && while read -r u; do echo "$u loaded failed failed $u"; done < "$f"; exit 0 ;;
  *) echo "systemctl stand-in: $*" >&2; exit 1 ;;
esac
"""

# `nix store diff-closures CURRENT RESULT`: the lines in state/closure-diff, and the kernel's change.
NIX = r"""#!/usr/bin/env bash
[ "$1 $2" = "store diff-closures" ] || { echo "nix stand-in: $*" >&2; exit 1; }
map() { case "$1" in /run/*) echo "$NFU_STATE$1";; *) echo "$1";; esac; }
cat "$NFU_STATE/closure-diff" 2>/dev/null
old=$(cat "$(map "$3")/kname"); new=$(cat "$(map "$4")/kname")
[ "$old" = "$new" ] || echo "linux: $old → $new, +1024.0 KiB"
"""

# The real readlink is found on PATH after this stand-in's own directory (the first entry).
READLINK = r"""#!/usr/bin/env bash
args=()
for a in "$@"; do case "$a" in
  /run/*) args+=("$NFU_STATE$a");;
  /nix/var/nix/profiles/*) args+=("$NFU_STATE/profiles/${a#/nix/var/nix/profiles/}");;
  *) args+=("$a");;
esac; done
PATH="${PATH#*:}" exec readlink "${args[@]}"
"""

# A nix-darwin host's kernel name (only on darwin hosts' PATH).
UNAME_DARWIN = r"""#!/usr/bin/env bash
[ "$1" = -s ] && { echo Darwin; exit 0; }
PATH="${PATH#*:}" exec uname "$@"
"""

STANDINS = {"nixos-rebuild": NIXOS_REBUILD, "darwin-rebuild": NIXOS_REBUILD, "nixos-version": NIXOS_VERSION,
            "darwin-version": NIXOS_VERSION, "systemctl": SYSTEMCTL, "readlink": READLINK, "nix": NIX}

NEEDED_TOOLS = ("bash", "git", "setsid", "tail", "timeout", "readlink")


def missing_tools() -> list[str]:
    return [tool for tool in NEEDED_TOOLS if shutil.which(tool) is None]


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=env).stdout.strip()


def prepare_host(root: Path, remote: Path, *, kernel: str = "6.12.1", darwin: bool = False) -> None:
    """A fresh host in ``root``: stand-ins, a clone of ``remote`` at its default branch, generation 1 running
    that commit (booted, except on ``darwin``: no /run/booted-system, and ``uname -s`` says Darwin)."""
    for sub in ("bin", "home", "state/run", "state/store", "state/profiles"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, text in {**STANDINS, **({"uname": UNAME_DARWIN} if darwin else {})}.items():
        path = root / "bin" / name
        path.write_text(text)
        path.chmod(0o755)
    git("clone", "-q", f"file://{remote}", str(root / "repo"))
    head = git("rev-parse", "HEAD", cwd=root / "repo")
    state = root / "state"
    system = state / "store" / "sys-1"
    system.mkdir()
    (system / "rev").write_text(head + "\n")
    (system / "kname").write_text(kernel + "\n")
    for f in ("kernel", "initrd", "kernel-modules"):
        (state / "store" / f"{f}-{kernel}").touch()
        (system / f).symlink_to(f"../{f}-{kernel}")
    (state / "run" / "current-system").symlink_to(system)
    (state / "profiles" / "system-1-link").symlink_to(system)
    (state / "profiles" / "system").symlink_to("system-1-link")
    if not darwin:
        (state / "run" / "booted-system").symlink_to(system)
    (state / "gen").write_text("1\n")


def session_env(root: Path) -> dict[str, str]:
    """What a session on the host sees (sshd's ``SetEnv``, or the in-process server's environment)."""
    return {"PATH": f"{root}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": f"{root}/home",
            "NFU_STATE": f"{root}/state"}


def ssh_keygen(path: Path) -> str:
    """A new ed25519 key pair at ``path`` (OpenSSH format); returns the public key line."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(path))
    path.chmod(0o600)
    public = key.export_public_key().decode().strip()
    path.with_suffix(".pub").write_text(public + "\n")
    return public


@dataclass
class SshHostsServer:
    """One asyncssh server per host on 127.0.0.1 (own host key and port), running commands with ``bash -c``
    in the host's environment. Accepts only ``authorized_keys``; no pty, no forwarding."""

    root: Path
    authorized_keys: Path
    servers: dict[str, Any] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _sessions: set[asyncio.subprocess.Process] = field(default_factory=set)

    async def add(self, name: str, *, online: bool = True) -> str:
        """Serve host ``name`` (prepared in ``root/name``); returns its known_hosts line."""
        import asyncssh

        host_root = self.root / name
        public = ssh_keygen(host_root / "hostkey")
        if not online:  # a reserved, closed port: unreachable
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.ports[name] = s.getsockname()[1]
            return f"[127.0.0.1]:{self.ports[name]} {public}"

        async def handle(process: Any) -> None:
            local = await asyncio.create_subprocess_exec(
                "bash", "-c", process.command or "true", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=session_env(host_root),
                cwd=host_root / "home", start_new_session=True)  # like sshd: the command leads its own group

            async def pump(source: asyncio.StreamReader, sink: Any) -> None:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()

            self._sessions.add(local)
            try:
                await asyncio.gather(pump(local.stdout, process.stdout), pump(local.stderr, process.stderr))
                process.exit(await local.wait())
            except Exception:  # the client went away: end the session (detached operations run on)
                process.close()
                await self._end(local)
            finally:
                self._sessions.discard(local)

        server = await asyncssh.create_server(
            asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[str(host_root / "hostkey")],
            authorized_client_keys=str(self.authorized_keys), process_factory=handle, encoding=None,
            allow_pty=False, agent_forwarding=False, x11_forwarding=False)
        self.servers[name] = server
        self.ports[name] = server.sockets[0].getsockname()[1]
        return f"[127.0.0.1]:{self.ports[name]} {public}"

    async def close(self) -> None:
        for server in self.servers.values():
            server.close()
            await server.wait_closed()
        self.servers.clear()
        for local in list(self._sessions):
            await self._end(local)

    @staticmethod
    async def _end(local: asyncio.subprocess.Process) -> None:
        if local.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(local.pid, signal.SIGTERM)
        await local.wait()


async def serve_scenario(sim: Any, root: Path) -> tuple[SshHostsServer, dict[str, Any]]:
    """The scenario's hosts as SSH hosts of ``sim``'s repository (run on the simulator's loop).

    Returns the server and the configuration tables that point nfu-tui at it
    (``fleet``, ``ssh``, ``hosts``). Faults map to knobs: ``switch_fails`` → a failing
    build, ``slow`` → a 10 s build, ``offline`` (or not online) → a closed port.
    """
    root.mkdir(parents=True, exist_ok=True)
    remote = root / "remote.git"
    sim.github.export_git(remote)
    sim.github.on_branch_moved(lambda _branch, _sha: sim.github.export_git(remote))
    identity = root / "id_ed25519"
    (root / "authorized_keys").write_text(ssh_keygen(identity) + "\n")
    server = SshHostsServer(root, root / "authorized_keys")
    known: list[str] = []
    hosts: dict[str, Any] = {}
    for spec in sim.scenario.hosts:
        darwin = spec.host_type in ("macos", "darwin")
        prepare_host(root / spec.name, remote, darwin=darwin)
        state = root / spec.name / "state"
        if spec.has("switch_fails"):
            (state / "fail-build").write_text("1\n")
        (state / "switch-steps").write_text("100\n" if spec.has("slow") else "15\n")
        if not darwin:  # the update brings a new kernel: switched hosts need a reboot (the grid's badge)
            (state / "next-kernel").write_text("6.12.2\n")
        known.append(await server.add(spec.name, online=spec.online and not spec.has("offline")))
        hosts[spec.name] = {"ssh": f"{os.environ.get('USER') or 'nfu'}@127.0.0.1:{server.ports[spec.name]}",
                            "repo_dir": str(root / spec.name / "repo"), "system": "darwin" if darwin else "nixos",
                            "role": f"{spec.device_type}/{spec.location}"}
    (root / "known_hosts").write_text("\n".join(known) + "\n")
    return server, {"fleet": {"backend": "ssh"}, "hosts": hosts,
                    "ssh": {"known_hosts": str(root / "known_hosts"), "identity_file": str(identity),
                            "poll_seconds": 5, "connect_timeout": 5}}
