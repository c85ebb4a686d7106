"""Configuration: TOML at the XDG config path, validated by pydantic, overridden by env.

Precedence (highest first): environment variables, ``--config PATH`` (or the XDG
file), defaults. The user's config file is only ever read; state the app changes
lives in :mod:`nfu_tui.core.state`.

Secrets (GitHub token, dashboard password, TOTP secret) are never part of the
model's printable data: they are resolved on demand by :func:`resolve_secrets`
into :class:`pydantic.SecretStr` from an env var, a file (agenix/sops style) or
``gh auth token``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import shutil
import stat
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from nfu_tui.errors import ConfigError
from nfu_tui.models import LOCATIONS, SERVER_TYPES, WORKSTATION_TYPES
from nfu_tui.sanitize import add_secret

REPO_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")

WEEK_MINUTES = 7 * 24 * 60
MAX_PARALLEL = 64

# Strict types: TOML's ``true`` is no number and ``1`` no boolean; numbers are finite.
Flag = Annotated[bool, Field(strict=True)]
Count = Annotated[int, Field(strict=True)]
Minutes = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=WEEK_MINUTES)]
Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GitHubConfig(_Section):
    repo: str = Field("", description="owner/name of the NixOS config repository (env NIXFLEET_GITHUB_REPO)")
    token_file: Path | None = Field(None, description="file holding the GitHub token (else env NIXFLEET_GITHUB_TOKEN or `gh auth token`)")
    merge_token_file: Path | None = Field(None, description="optional second token used only for writes (merge, revert)")
    api_url: str = Field("https://api.github.com", description="REST base URL")
    graphql_url: str | None = Field(None, description="GraphQL URL; default api_url + '/graphql'")
    poll_minutes: float = Field(5.0, strict=True, allow_inf_nan=False, gt=0, le=1440,
                                description="how often to poll for update PRs (at most a day)")
    update_branch: str = Field("update_flake_lock_action", min_length=1, description="head branch of update-flake-lock PRs")
    fork_repos: list[str] = Field(
        default_factory=list, description="owner/name of forks whose update PRs are trusted (update-flake-lock push-to-fork)"
    )
    labels: list[str] = Field(default_factory=lambda: ["automated", "dependencies"], description="labels that mark update PRs")
    title_patterns: list[str] = Field(
        default_factory=lambda: ["flake.lock", "update flake", "bump flake"], description="case-insensitive title fragments"
    )
    merge_method: Literal["merge", "squash", "rebase"] = "merge"
    required_checks: list[str] = Field(default_factory=list, description="check names that must pass (empty = all)")
    max_compare_commits: Count = Field(2500, ge=0, le=50000, description="cap on nixpkgs commits fetched per compare")
    deployments: Flag = Field(True, description="record each run as a GitHub deployment and honour other admins' "
                                                "in-progress deployments as a lock (needs Deployments: write)")
    deployment_environment: str = Field("fleet", min_length=1, max_length=255,
                                        description="GitHub environment the deployments are recorded in")
    deployment_stale_minutes: Minutes = Field(120, gt=0, description="another client's in-progress deployment "
                                                                     "without news for this long is no lock")

    @field_validator("repo")
    @classmethod
    def _repo_slug(cls, v: str) -> str:
        v = v.strip()
        if v and not REPO_RE.match(v):
            raise ValueError(f"{v!r} is not an owner/name repository slug (e.g. 'alice/nixos-config')")
        return v

    @field_validator("fork_repos")
    @classmethod
    def _fork_slugs(cls, v: list[str]) -> list[str]:
        for slug in v:
            if not REPO_RE.match(slug):
                raise ValueError(f"{slug!r} is not an owner/name repository slug")
        return v

    @field_validator("api_url", "graphql_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        _check_http_url(v)
        return v.rstrip("/")

    @property
    def graphql_endpoint(self) -> str:
        return self.graphql_url or self.api_url + "/graphql"


class DashboardConfig(_Section):
    url: str = Field("", description="NixFleet dashboard base URL (env NIXFLEET_URL)")
    password_file: Path | None = Field(None, description="file holding the dashboard password (else env NIXFLEET_PASSWORD, or asked at start)")
    totp_secret_file: Path | None = Field(None, description="base32 TOTP secret, only for unattended runs against a TOTP-protected dashboard")
    insecure: Flag = Field(False, description="allow plain http:// to a non-loopback dashboard")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v:
            _check_http_url(v)
        return v.rstrip("/")


class AutomationConfig(_Section):
    enabled: Flag = False
    delay_minutes: Minutes = Field(60, description="wait after the PR's last update before merging (at most a week)")
    require_ci: Flag = Field(True, description="a PR with no CI at all needs require_ci = false to be merged automatically")
    deploy_strategy: Literal["all", "online-only", "none"] = "all"
    max_parallel: Count = Field(1, ge=1, le=MAX_PARALLEL)
    canary_wait_minutes: Minutes = Field(10, description="how long canaries must stay healthy (at most a week)")
    maintenance_windows: list[str] = Field(default_factory=list)
    min_window_minutes: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=24 * 60)] = Field(30, description=(
        "merge only when the open window has at least this long left (more when past runs of this fleet "
        "took longer)"))
    preview_before_merge: Flag = Field(False, description=(
        'build the PR on the planned hosts first (fleet.backend = "ssh"); a host that fails to build stops the merge'))

    @field_validator("maintenance_windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        from nfu_tui.domain.windows import parse_window

        errors = []
        for i, spec in enumerate(v):
            try:
                parse_window(spec)
            except ValueError as exc:
                errors.append(f"[{i}] {spec!r}: {exc}")
        if errors:
            raise ValueError("; ".join(errors))
        return v


class RollbackConfig(_Section):
    enabled: Flag = True
    strategy: Literal["revert-commit", "revert-pr", "alert-only"] = "revert-commit"


PostSwitchTests = Literal["auto", "always", "never"]


class FlakeUpdatesConfig(_Section):
    enabled: Flag = True
    verify_minutes: float = Field(
        5, strict=True, ge=0, le=1440, allow_inf_nan=False,
        description="after a switch, wait this long for the dashboard to report System ok for the new generation",
    )
    post_switch_tests: PostSwitchTests = Field(
        "auto",
        description="run the dashboard's test op after a switch: auto (hosts whose tests ran before) | always | never",
    )
    automation: AutomationConfig = Field(default_factory=AutomationConfig)
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)


class NotifyConfig(_Section):
    webhook_url: str = Field("", description="ntfy-compatible webhook; empty = off")
    bell: Flag = Field(True, description="ring the terminal bell on deploy outcomes")

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, v: str) -> str:
        if v:
            _check_http_url(v)
        return v


SSH_TARGET_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?$")


def parse_ssh_target(value: str) -> tuple[str, str, int]:
    """``[user@]host[:port]`` → (user, host, port); user defaults to root, port to 22. ValueError when bad."""
    m = SSH_TARGET_RE.match(value.strip())
    port = int(m.group("port") or 22) if m else 0
    if not m or not 0 < port < 65536:
        raise ValueError(f"{value!r} is not [user@]host[:port] (e.g. 'root@web1.example.org:22')")
    return m.group("user") or "root", m.group("host").strip("[]"), port


def parse_role(value: str) -> tuple[str, str]:
    """``KIND[/LOCATION]`` → (kind, location), as the dashboard's ``device_type`` and ``location`` (the
    planner's tiers); ("", "") for an empty value. ValueError names the known words."""
    text = value.strip().lower()
    if not text:
        return "", ""
    kind, _, location = text.partition("/")
    kinds = sorted(WORKSTATION_TYPES | SERVER_TYPES)
    if kind not in kinds:
        raise ValueError(f"{value!r}: kind {kind!r} is not one of {', '.join(kinds)} (e.g. 'server/cloud')")
    if location and location not in LOCATIONS:
        raise ValueError(f"{value!r}: location {location!r} is not one of {', '.join(LOCATIONS)}")
    return kind, location


class HostConfig(_Section):
    auto_update: Flag = True
    priority: Count | None = Field(None, ge=0, le=10000, description="lower deploys first; unset = default tiering")
    canary: Flag = False
    ssh: str = Field("", description="[user@]host[:port] for fleet.backend = \"ssh\" (e.g. root@web1.example.org:22)")
    flake_attr: str = Field("", description="nixosConfigurations attribute; default the host's name")
    repo_dir: str = Field("/etc/nixos", min_length=1, description="the configuration checkout on the host")
    system: Literal["nixos", "darwin"] = Field("nixos", description="darwin hosts use darwin-rebuild")
    test_command: str = Field("", description="the host's tests for the test op, run in repo_dir over SSH")
    role: str = Field("", description='fleet.backend = "ssh": what the host is, "KIND[/LOCATION]" (e.g. '
                      '"server/cloud", "laptop/home"): the Type column and the default deploy order')
    post_switch_tests: PostSwitchTests | None = Field(
        None, description="overrides flake_updates.post_switch_tests for this host")

    @field_validator("ssh")
    @classmethod
    def _ssh(cls, v: str) -> str:
        if v:
            parse_ssh_target(v)
        return v.strip()

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        parse_role(v)
        return v.strip().lower()

    @field_validator("flake_attr")
    @classmethod
    def _attr(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"{v!r} is not a flake attribute name")
        return v


class FleetConfig(_Section):
    backend: Literal["nixfleet", "ssh"] = Field("nixfleet", description="how hosts are reached: a NixFleet dashboard or SSH")


class SshConfig(_Section):
    poll_seconds: Seconds = Field(30.0, ge=2, le=3600, description="how often every host is probed")
    connect_timeout: Seconds = Field(10.0, gt=0, le=300, description="seconds to open one SSH connection")
    max_concurrency: Count = Field(8, ge=1, le=256, description="hosts probed or deployed over SSH at once")
    known_hosts: Path = Field(Path("~/.ssh/known_hosts"), description="host keys are checked strictly against this file")
    identity_file: Path | None = Field(None, description="private key (else the SSH agent and ~/.ssh defaults)")


class Config(_Section):
    github: GitHubConfig = Field(default_factory=GitHubConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    ssh: SshConfig = Field(default_factory=SshConfig)
    flake_updates: FlakeUpdatesConfig = Field(default_factory=FlakeUpdatesConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    hosts: dict[str, HostConfig] = Field(default_factory=dict)
    keys: dict[str, Any] = Field(default_factory=dict, description="binding id -> keys (see nfu_tui.keymap)")

    source: Path | None = Field(None, exclude=True, description="file this configuration was read from")

    def host(self, name: str) -> HostConfig:
        return self.hosts.get(name) or HostConfig()

    @property
    def uses_ssh(self) -> bool:
        return self.fleet.backend == "ssh"

    @model_validator(mode="after")
    def _ssh_hosts(self) -> "Config":
        if self.flake_updates.automation.preview_before_merge and not self.uses_ssh:
            raise ValueError('flake_updates.automation.preview_before_merge needs fleet.backend = "ssh" '
                             "(the dashboard cannot build a configuration without activating it)")
        if self.uses_ssh:
            if not self.hosts:
                raise ValueError('fleet.backend = "ssh" needs at least one [hosts.NAME] with ssh = "user@host:port"')
            missing = [name for name, h in self.hosts.items() if not h.ssh]
            if missing:
                raise ValueError(f'fleet.backend = "ssh": no ssh = "user@host:port" for host(s) {", ".join(missing)}')
        return self

    def post_switch_tests(self, name: str) -> str:
        """auto | always | never for one host (its own setting, else the global one)."""
        return self.host(name).post_switch_tests or self.flake_updates.post_switch_tests


def _check_http_url(v: str) -> None:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{v!r} is not an http(s) URL")


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything else (0.0.0.0 included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- loading ------------------------------------------------------------------

ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "NIXFLEET_GITHUB_REPO": ("github", "repo"),
    "NIXFLEET_GITHUB_API_URL": ("github", "api_url"),
    "NIXFLEET_URL": ("dashboard", "url"),
}


def _fields_of(loc: tuple[Any, ...]) -> list[str]:
    """The known keys of the TOML table at ``loc`` (for "did you mean")."""
    if loc[:1] == ("hosts",):
        return list(HostConfig.model_fields) if len(loc) == 2 else []
    cur: type[BaseModel] = Config
    for part in loc:
        f = cur.model_fields.get(str(part))
        ann = f.annotation if f else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        cur = ann
    return [k for k, f in cur.model_fields.items() if not f.exclude]


@dataclass
class ConfigProblem:
    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" + (f" — {self.hint}" if self.hint else "")


@dataclass
class ConfigLoadError(ConfigError):
    """All problems found in one configuration, each with its TOML key."""

    path: Path | None
    problems: list[ConfigProblem] = field(default_factory=list)

    def __post_init__(self) -> None:
        where = str(self.path) if self.path else "configuration"
        lines = [f"{where}: {len(self.problems)} problem(s)"] + [f"  {p}" for p in self.problems]
        ConfigError.__init__(self, "\n".join(lines))

    def __str__(self) -> str:
        return self.message


def _problems_from(exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = _fields_of(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else (f"known keys: {', '.join(known)}" if known else "")
            problems.append(ConfigProblem(key, "unknown key", hint))
        else:
            msg = _user_words(err)
            hint = ""
            if "maintenance_windows" in key:
                hint = 'e.g. "Sat 02:00-05:00 Europe/Vienna" or "Mon-Fri 22:00-23:30"'
            elif key.endswith("repo"):
                hint = "write it as owner/name"
            problems.append(ConfigProblem(key, msg, hint))
    return problems


_TOML_KIND = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a table"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _TOML_KIND[type(value)]
    return repr(value)


def _user_words(err: Any) -> str:
    """A pydantic error in the words of the TOML file (never an internal class name)."""
    kind, value = err["type"], err.get("input")
    got = f" (got {_toml_value(value)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a table of keys, not {_TOML_KIND.get(type(value), 'a value')}"
    if kind in ("float_type", "float_parsing", "int_type", "int_parsing", "int_from_float"):
        whole = kind.startswith("int")
        return f"must be a {'whole ' if whole else ''}number" + got
    if kind == "finite_number":
        return "must be a finite number" + got
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false (without quotes)" + got
    if kind in ("string_type", "path_type"):
        return "must be a string in quotes" + got
    if kind == "list_type":
        return "must be a list, e.g. [\"a\", \"b\"]" + got
    msg = err["msg"].removeprefix("Value error, ")
    msg = re.sub(r",? or (?:an )?instance of \w+", "", msg)
    return msg.replace("Input should be", "must be") + (got if kind.startswith(("greater", "less", "literal")) else "")


def default_config_path() -> Path:
    from nfu_tui.paths import config_path

    return config_path()


def load_config(path: str | Path | None = None, *, env: dict[str, str] | None = None, required: bool = False) -> Config:
    """Read and validate the configuration.

    ``path`` None means the XDG path; a missing file there gives the defaults unless
    ``required``. An explicitly named file must exist. Raises :class:`ConfigLoadError`.
    """
    env = os.environ if env is None else env
    explicit = path is not None
    file = Path(path).expanduser() if explicit else default_config_path()
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigLoadError(file, [ConfigProblem("(syntax)", f"not valid TOML: {exc}")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigLoadError(file, [ConfigProblem("(file)", f"cannot read: {exc}")]) from None
    elif explicit or required:
        raise ConfigLoadError(
            file, [ConfigProblem("(file)", "no such file", "create one with `nfu-tui config init`")]
        )
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            data.setdefault(section, {})
            if isinstance(data[section], dict):
                data[section][key] = env[var]
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigLoadError(file if file.exists() else None, _problems_from(exc)) from None
    from nfu_tui.keymap import keymap_problems

    problems = [ConfigProblem(f"keys.{bid}", message, hint) for bid, message, hint in keymap_problems(cfg.keys)]
    if problems:
        raise ConfigLoadError(file if file.exists() else None, problems)
    cfg.source = file if file.exists() else None
    return cfg


# --- secrets ------------------------------------------------------------------


@dataclass
class Secrets:
    """Resolved secrets. ``repr`` never shows their values."""

    github_token: SecretStr | None = None
    github_token_source: str = ""
    merge_token: SecretStr | None = None
    dashboard_password: SecretStr | None = None
    dashboard_password_source: str = ""
    totp_secret: SecretStr | None = None
    warnings: list[str] = field(default_factory=list)


SECRET_FILE_MAX_BYTES = 64 * 1024


def read_secret_file(path: Path, what: str, warnings: list[str]) -> SecretStr:
    """Read a secret from a file (first line, stripped, at most 64 KiB); warn when group/others can read it."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    from nfu_tui.paths import FileTooLarge, read_bounded

    try:
        data = read_bounded(path, SECRET_FILE_MAX_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    except FileTooLarge as exc:
        raise ConfigError(f"{what} file {path} is larger than {exc.limit_text}; is it the right file?") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {path} is not UTF-8 text") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"{what} file {path} is readable by group/others (chmod 600 it)")
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise ConfigError(f"{what} file {path} is empty")
    return SecretStr(value)


def gh_auth_token() -> SecretStr | None:
    """The token of the GitHub CLI, if it is installed and logged in."""
    gh = shutil.which("gh")
    if not gh:
        return None
    try:
        out = subprocess.run([gh, "auth", "token"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    token = out.stdout.strip()
    return SecretStr(token) if out.returncode == 0 and token else None


def resolve_secrets(
    cfg: Config, *, env: dict[str, str] | None = None, use_gh: bool = True, problems: list[str] | None = None
) -> Secrets:
    """Find each secret: env var, then the configured file, then (token only) ``gh auth token``.

    A secret file that cannot be used raises :class:`ConfigError`; with ``problems`` given,
    every such message is appended to it instead and the other secrets are still read
    (``config check`` reports them all at once).
    """
    env = os.environ if env is None else env
    s = Secrets()

    def from_file(path: Path, what: str) -> SecretStr | None:
        try:
            return read_secret_file(path, what, s.warnings)
        except ConfigError as exc:
            if problems is None:
                raise
            problems.append(exc.message)
            return None

    if env.get("NIXFLEET_GITHUB_TOKEN"):
        s.github_token, s.github_token_source = SecretStr(env["NIXFLEET_GITHUB_TOKEN"]), "env NIXFLEET_GITHUB_TOKEN"
    elif cfg.github.token_file:
        s.github_token = from_file(cfg.github.token_file, "GitHub token")
        s.github_token_source = f"file {cfg.github.token_file}"
    elif use_gh and (tok := gh_auth_token()):
        s.github_token, s.github_token_source = tok, "gh auth token"
    if cfg.github.merge_token_file:
        s.merge_token = from_file(cfg.github.merge_token_file, "GitHub merge token")
    if env.get("NIXFLEET_PASSWORD"):
        s.dashboard_password, s.dashboard_password_source = SecretStr(env["NIXFLEET_PASSWORD"]), "env NIXFLEET_PASSWORD"
    elif cfg.dashboard.password_file:
        s.dashboard_password = from_file(cfg.dashboard.password_file, "dashboard password")
        s.dashboard_password_source = f"file {cfg.dashboard.password_file}"
    if cfg.dashboard.totp_secret_file:
        s.totp_secret = from_file(cfg.dashboard.totp_secret_file, "TOTP secret")
    add_secret(s.github_token, s.merge_token, s.dashboard_password, s.totp_secret)  # redacted from now on
    return s


def load_settings(path: str | Path | None = None) -> tuple[Config, Secrets]:
    """The configuration and its resolved secrets; ConfigError (message for the user) when bad."""
    cfg = load_config(path)
    return cfg, resolve_secrets(cfg)


def missing_settings(cfg: Config, secrets: Secrets, *, token: bool = True, password: bool = True) -> list[str]:
    """What a command that talks to both services lacks, one sentence each (empty = complete)."""
    needed = [("github.repo", cfg.github.repo)] + ([] if cfg.uses_ssh else [("dashboard.url", cfg.dashboard.url)])
    problems = [f"{key} not configured (see `nfu-tui config check`)" for key, value in needed if not value]
    if token and secrets.github_token is None:
        problems.append("no GitHub token (set NIXFLEET_GITHUB_TOKEN, github.token_file, or log in with `gh auth login`)")
    if password and secrets.dashboard_password is None and not cfg.uses_ssh:
        problems.append("no dashboard password (set dashboard.password_file or NIXFLEET_PASSWORD)")
    return problems


# --- starter file -------------------------------------------------------------

STARTER: dict[str, Any] = {
    "github": {
        "repo": "owner/nixcfg",
        "token_file": "/run/agenix/github-token",
        "api_url": "https://api.github.com",
        "poll_minutes": 5,
    },
    "dashboard": {"url": "https://fleet.example.com", "password_file": "/run/agenix/nixfleet-password"},
    "flake_updates": {
        "enabled": True,
        "verify_minutes": 5,
        "post_switch_tests": "auto",
        "automation": {
            "enabled": False,
            "delay_minutes": 60,
            "require_ci": True,
            "deploy_strategy": "all",
            "max_parallel": 1,
            "canary_wait_minutes": 10,
            "maintenance_windows": ["Sat 02:00-05:00"],
            "min_window_minutes": 30,
        },
        "rollback": {"enabled": True, "strategy": "revert-commit"},
    },
    "notify": {"webhook_url": ""},
    "hosts": {"example-host": {"auto_update": True, "priority": 1, "canary": True}},
}


def placeholder_problems(cfg: Config) -> list[str]:
    """The values ``config init`` writes that still need editing (``config check`` flags them)."""
    found = []
    if cfg.github.repo == STARTER["github"]["repo"]:
        found.append(f"github.repo: still the example {cfg.github.repo!r} — your NixOS config repository as owner/name")
    if cfg.dashboard.url == STARTER["dashboard"]["url"]:
        found.append(f"dashboard.url: still the example {cfg.dashboard.url!r} — your NixFleet dashboard's URL")
    found += [
        f"hosts.{name}: an example host from `config init` — rename it to one of your hosts or remove it"
        for name in STARTER["hosts"]
        if name in cfg.hosts
    ]
    return found


def starter_toml() -> str:
    import tomli_w

    header = (
        "# nfu-tui configuration — see `nfu-tui config check` and the README.\n"
        "# Secrets are not written here: point token_file/password_file at files\n"
        "# (agenix/sops), or use env NIXFLEET_GITHUB_TOKEN / NIXFLEET_PASSWORD.\n\n"
    )
    return header + tomli_w.dumps(STARTER)


def write_starter(path: Path) -> Path:
    """Write the starter config; refuse to overwrite an existing file."""
    path = Path(path).expanduser()
    if path.exists():
        raise ConfigError(f"{path} already exists; not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(starter_toml())
    return path


def effective_summary(cfg: Config, secrets: Secrets) -> list[str]:
    """Human-readable lines describing the effective configuration, secrets as ***."""

    def shown(secret: SecretStr | None, source: str = "") -> str:
        return f"*** ({source})" if secret and source else ("***" if secret else "(not set)")

    fu = cfg.flake_updates
    auto = fu.automation
    lines = [
        f"config file       {cfg.source or '(none: defaults + environment)'}",
        f"github.repo       {cfg.github.repo or '(not set)'}",
        f"github.api_url    {cfg.github.api_url}  (GraphQL {cfg.github.graphql_endpoint})",
        f"github token      {shown(secrets.github_token, secrets.github_token_source)}",
        f"github merge tok  {shown(secrets.merge_token, 'file') if secrets.merge_token else '(same as read token)'}",
        f"poll every        {cfg.github.poll_minutes:g} min",
        f"deployments       " + (f"on: environment {cfg.github.deployment_environment!r}, another client's run is a "
                                 f"lock for {cfg.github.deployment_stale_minutes:g} min without news"
                                 if cfg.github.deployments else "off (local deploy lock only)"),
    ]
    if cfg.uses_ssh:
        ssh = cfg.ssh
        lines += [
            "fleet.backend     ssh",
            f"ssh               poll every {ssh.poll_seconds:g} s; connect timeout {ssh.connect_timeout:g} s; "
            f"{ssh.max_concurrency} hosts at once",
            f"ssh.known_hosts   {ssh.known_hosts}",
            f"ssh.identity_file {ssh.identity_file or '(SSH agent / ~/.ssh defaults)'}",
        ]
    else:
        lines += [
            f"dashboard.url     {cfg.dashboard.url or '(not set)'}",
            f"dashboard pass    {shown(secrets.dashboard_password, secrets.dashboard_password_source) if secrets.dashboard_password else '(asked at start)'}",
            f"totp secret       {'***' if secrets.totp_secret else '(not set)'}",
        ]
    lines += [
        f"automation        {'on' if auto.enabled else 'off'}; delay {auto.delay_minutes:g} min; CI required: {auto.require_ci}; "
        f"strategy {auto.deploy_strategy}; parallel {auto.max_parallel}; canary wait {auto.canary_wait_minutes:g} min"
        + ("; preview before merge" if auto.preview_before_merge else ""),
        f"windows           {', '.join(auto.maintenance_windows) or '(always open)'}"
        + (f"; merge with at least {auto.min_window_minutes:g} min left" if auto.maintenance_windows else ""),
        f"verification      wait {fu.verify_minutes:g} min for System ok after a switch; "
        f"post-switch tests {fu.post_switch_tests}",
        f"rollback          {'on' if fu.rollback.enabled else 'off'} ({fu.rollback.strategy})",
        f"notify webhook    {'***' if cfg.notify.webhook_url else '(off)'}",
        f"hosts configured  {len(cfg.hosts)}"
        + (
            ": " + ", ".join(
                f"{n}{' canary' if h.canary else ''}{f' p{h.priority}' if h.priority is not None else ''}"
                f"{'' if h.auto_update else ' manual'}"
                for n, h in sorted(cfg.hosts.items())
            )
            if cfg.hosts
            else ""
        ),
        f"keys remapped     {', '.join(f'{k} = {v}' for k, v in sorted(cfg.keys.items())) or '(defaults)'}",
    ]
    return lines
