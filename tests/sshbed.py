"""A test bed of NixOS hosts reached over real OpenSSH (``sshd`` on 127.0.0.1, one per host).

Each :class:`BedHost` has its own host key, port and directory (prepared by
:func:`nfu_tui.sim.sshhosts.prepare_host`: stand-in nix tools, a real git clone of the
bare repository exported from the simulated GitHub, the state directory and its knobs);
its sessions get ``PATH``/``HOME``/``NFU_STATE`` through ``SetEnv`` (contract
ssh-hosts.md: no ForceCommand, which would refuse signals).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nfu_tui.sim.sshhosts import git, missing_tools, prepare_host, session_env

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_sshd() -> None:
    """Install OpenSSH's server from the distribution where missing (as root with apt), else skip."""
    global SSHD
    if not Path(SSHD).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server"], capture_output=True, timeout=300,
                       check=False)
        SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(SSHD).exists():
        pytest.skip("no OpenSSH server (install openssh-server: `apt-get install -y openssh-server`)")
    if os.geteuid() != 0:
        pytest.skip("the SSH test bed runs sshd with root logins by key: run the tests as root")
    for tool in ["ssh-keygen", *missing_tools()]:
        if not shutil.which(tool):
            pytest.skip(f"the SSH test bed needs {tool}")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


@dataclass
class BedHost:
    name: str
    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    def knob(self, name: str, value: str = "1") -> None:
        (self.state / name).write_text(value + "\n")

    def clear(self, name: str) -> None:
        (self.state / name).unlink(missing_ok=True)

    @property
    def current_rev(self) -> str:
        return (self.state / "run" / "current-system" / "rev").read_text().strip()

    @property
    def generation(self) -> int:
        return int((self.state / "gen").read_text())

    @property
    def switches(self) -> int:
        path = self.state / "switches"
        return len(path.read_text().splitlines()) if path.exists() else 0

    @property
    def builds(self) -> int:
        path = self.state / "builds"
        return len(path.read_text().splitlines()) if path.exists() else 0

    @property
    def checkout(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.repo)

    def start(self) -> None:
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                                        stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "ab"),
                                        start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd for {self.name} exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"sshd for {self.name} did not listen on {self.port}")

    def stop(self) -> None:
        """The host drops off the network: sshd and every session it serves end (detached commands go on)."""
        if self.process is None:
            return
        pid = self.process.pid
        for child in _descendants(pid):
            _kill(child)
        _kill(pid)
        self.process.wait(timeout=10)
        self.process = None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class SshBed:
    root: Path
    remote: Path  # the bare repository the hosts fetch from
    hosts: dict[str, BedHost] = field(default_factory=dict)

    @property
    def identity(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.identity)], check=True)
        shutil.copy(self.identity.with_suffix(".pub"), self.root / "authorized_keys")
        self.known_hosts.write_text("")

    def add(self, name: str, *, trusted: bool = True, kernel: str = "6.12.1", darwin: bool = False) -> BedHost:
        root = self.root / name
        port = _free_port()
        host = BedHost(name, root, port)
        prepare_host(root, self.remote, kernel=kernel, darwin=darwin)
        self.new_host_key(host)
        (root / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/hostkey\nPidFile {root}/sshd.pid\n"
            f"AuthorizedKeysFile {self.root}/authorized_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            "MaxSessions 64\nMaxStartups 64\nLogLevel ERROR\n"
            "SetEnv " + " ".join(f"{k}={v}" for k, v in session_env(root).items()) + "\n")
        if trusted:
            self.trust(host)
        host.start()
        self.hosts[name] = host
        return host

    def new_host_key(self, host: BedHost) -> None:
        key = host.root / "hostkey"
        for path in (key, key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)

    def fingerprint(self, host: BedHost) -> str:
        out = subprocess.run(["ssh-keygen", "-lf", str(host.root / "hostkey.pub")], capture_output=True, text=True,
                             check=True).stdout
        return out.split()[1]

    def trust(self, host: BedHost) -> None:
        kind, blob = (host.root / "hostkey.pub").read_text().split()[:2]
        with self.known_hosts.open("a") as fh:
            fh.write(f"[127.0.0.1]:{host.port} {kind} {blob}\n")

    def toml_hosts(self, **extra: dict) -> dict:
        return {name: {"ssh": f"root@127.0.0.1:{h.port}", "repo_dir": str(h.repo), **extra.get(name, {})}
                for name, h in self.hosts.items()}

    def config(self, **ssh: object) -> dict:
        return {"fleet": {"backend": "ssh"},
                "ssh": {"known_hosts": str(self.known_hosts), "identity_file": str(self.identity),
                        "poll_seconds": 2, "connect_timeout": 3, **ssh}}

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop()
