# services.nfu-tui-auto: `nfu-tui auto` (the headless automation) as a hardened systemd service.
# Imported by ../flake.nix as nixosModules.default (`self` is the flake, for the default package).
# The unit it writes is the one README.md documents; tests/test_nix.py keeps the two in step.
self:
{ config, lib, pkgs, utils, ... }:

let
  cfg = config.services.nfu-tui-auto;
in
{
  options.services.nfu-tui-auto = {
    enable = lib.mkEnableOption "nfu-tui automation (`nfu-tui auto`): merge and deploy flake.lock update PRs";

    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = lib.literalExpression "nfu-tui.packages.\${pkgs.stdenv.hostPlatform.system}.default";
      description = "The nfu-tui package to run.";
    };

    user = lib.mkOption {
      type = lib.types.str;
      default = "nfu-tui";
      example = "alice";
      description = ''
        User the service runs as. The default creates a system user `nfu-tui`. Name the admin who
        runs the TUI instead to let them watch it: start the TUI with
        `NFU_TUI_STATE_DIR=/var/lib/<stateDir>` as that user.
      '';
    };

    configFile = lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression "./nfu-tui.toml";
      description = ''
        nfu-tui's config.toml. Keep secrets out of it: point `token_file` / `password_file` at
        agenix/sops files readable by {option}`user`, or use {option}`environmentFile`.
      '';
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/run/agenix/nfu-tui.env";
      description = ''
        File with `NIXFLEET_GITHUB_TOKEN=…` / `NIXFLEET_PASSWORD=…` lines (systemd EnvironmentFile),
        read by systemd as root: it never enters the Nix store.
      '';
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--stop-grace" "90" "--metrics-listen" "127.0.0.1:9464" ];
      description = "Extra arguments of `nfu-tui auto`.";
    };

    stateDir = lib.mkOption {
      type = lib.types.str;
      default = "nfu-tui";
      description = "Directory under /var/lib for the journal, audit trail, state.json and deploy lock.";
    };
  };

  config = lib.mkIf cfg.enable {
    users.users = lib.mkIf (cfg.user == "nfu-tui") {
      nfu-tui = { isSystemUser = true; group = "nfu-tui"; };
    };
    users.groups = lib.mkIf (cfg.user == "nfu-tui") { nfu-tui = { }; };

    systemd.services.nfu-tui-auto = {
      description = "nfu-tui automation: merge and deploy flake.lock updates";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      environment = {
        NFU_TUI_STATE_DIR = "/var/lib/${cfg.stateDir}";
        XDG_CACHE_HOME = "/var/cache";
      };
      serviceConfig = {
        ExecStart = utils.escapeSystemdExecArgs (
          [ (lib.getExe cfg.package) "--config" cfg.configFile "auto" ] ++ cfg.extraArgs
        );
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;
        User = cfg.user;
        StateDirectory = cfg.stateDir;
        StateDirectoryMode = "0700";
        CacheDirectory = "nfu-tui";
        Restart = "on-failure";
        RestartSec = 30;
        TimeoutStopSec = 120;
        KillSignal = "SIGTERM";
        UMask = "0077";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = "read-only";
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        CapabilityBoundingSet = "";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        SystemCallArchitectures = "native";
      };
    };
  };
}
