{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.nomad.systemdDriver;
  nomadCfg = config.services.nomad;
  toml = pkgs.formats.toml { };
  inherit (lib) mkOption types;

  # The allow-list entry for an installed unit: a template `web@.service` admits its instances `web@*.service`.
  unitGlob =
    name:
    let
      template = builtins.match "(.*)@(\\.[^.]+)" name;
    in
    if template == null then name else "${builtins.elemAt template 0}@*${builtins.elemAt template 1}";

  # What both the agent's plugin block and config.toml receive. Unset (null) keys are left out,
  # so the driver's built-in default applies.
  pluginConfig = lib.filterAttrs (_: value: value != null) (
    cfg.settings
    // {
      allowed_units = lib.unique (cfg.settings.allowed_units ++ map unitGlob (lib.attrNames cfg.unitTemplates));
    }
  );
in
{
  options.services.nomad.systemdDriver = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to load nomad-driver-systemd into the Nomad agent, so that jobs can use
        `driver = "systemd"`. The driver is added to {option}`services.nomad.extraSettingsPlugins`
        and configured through a `plugin "nomad-driver-systemd"` block, and the Nomad client is enabled.

        This forces {option}`services.nomad.dropPrivileges` to `false`: the agent starts the driver
        as its child, and the driver creates, starts and stops units through systemd on the system
        D-Bus, which only root may do. The tasks themselves run as `DynamicUser=` (or
        {option}`services.nomad.systemdDriver.settings.default_user`) unless a job sets `user`.

        Nomad is unfree (BUSL) in nixpkgs; allow it alone, for example with
        `nixpkgs.config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "nomad" ];`.
      '';
    };

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The nomad-driver-systemd package. Its `bin/` must hold the driver binary only.";
    };

    settings = mkOption {
      default = { };
      description = ''
        The driver's plugin configuration. It becomes the `config` of the agent's
        `plugin "nomad-driver-systemd"` block and `/etc/nomad-driver-systemd/config.toml`, which
        `nomad-driver-systemd validate` and `list` read, so the CLI judges jobs as the agent does.
      '';
      example = lib.literalExpression ''
        {
          allowed_units = [ "backup-*.service" ];
          denied_properties = [ "PrivateNetwork" ];
          default_user = "nomad-task";
        }
      '';
      # No freeform keys: the driver refuses unknown keys, so a misspelt one fails here, at
      # evaluation, not when the agent starts. Every key of `nomad-driver-systemd schema` has
      # an option below (tests/nix_eval.rs checks both ways).
      type = types.submodule {
        options = {
          enabled = mkOption {
            type = types.bool;
            default = true;
            description = "Whether the driver reports itself as detected. With `false` Nomad places no systemd tasks here.";
          };
          slice = mkOption {
            type = types.str;
            default = "nomad_tasks.slice";
            description = ''
              Parent slice of every task unit. Not `nomad.slice`, which Nomad manages itself;
              a `-` in a slice name means nesting (`a-b.slice` lives in `a.slice`).
            '';
          };
          allowed_units = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [ "web@*.service" ];
            description = ''
              Globs of installed units that jobs may start with `unit = "..."`. Empty refuses unit mode.
              The units of {option}`services.nomad.systemdDriver.unitTemplates` are added automatically.
            '';
          };
          allowed_properties = mkOption {
            type = types.nullOr (types.listOf types.str);
            default = null;
            description = "Unit directives jobs may set in `properties`. `null` keeps the driver's built-in safe set.";
          };
          denied_properties = mkOption {
            type = types.nullOr (types.listOf types.str);
            default = null;
            description = "Unit directives jobs may never set in `properties`. `null` keeps the driver's built-in list.";
          };
          default_user = mkOption {
            type = types.str;
            default = "";
            description = "User of tasks whose job sets no `user`. Empty: `DynamicUser=yes` with one user per allocation, so all tasks and restarts of an allocation share one unprivileged uid.";
          };
          allowed_users = mkOption {
            type = types.listOf types.str;
            default = [ ];
            description = "Host users a job may name in `user` (the task then gets `User=` and its primary group as `Group=`). Empty: jobs may name no host user; `root` is governed by `allow_root` alone.";
          };
          allow_root = mkOption {
            type = types.bool;
            default = false;
            description = "Whether tasks may run as `root` (uid 0).";
          };
          allow_supplementary_groups = mkOption {
            type = types.bool;
            default = false;
            description = "Whether a user named by a job may keep the supplementary groups the host's group database gives it (systemd always adds them for `User=`). With `false` such a user is refused.";
          };
          sandbox = mkOption {
            type = types.enum [
              "strict"
              "none"
            ];
            default = "strict";
            description = "Isolation of every transient task: `strict` makes the host read-only to it (`ProtectSystem=strict`), hides `/home`, `/root` and `/run/user` (`ProtectHome=yes`), and sets `PrivateDevices`, `NoNewPrivileges`, `ProtectKernel*`, `ProtectControlGroups`, `RestrictSUIDSGID` and `LockPersonality`; only the task's binds are writable. `none` leaves the host as the task's user sees it.";
          };
          allow_loosening = mkOption {
            type = types.listOf types.str;
            default = [ ];
            description = "Sandbox settings (e.g. `ProtectHome`) that a job's `properties` may set to a looser value. Empty: jobs may only tighten the sandbox.";
          };
          logs = mkOption {
            type = types.enum [
              "nomad"
              "journal"
              "both"
            ];
            default = "nomad";
            description = "Where task output goes: `nomad` to Nomad's log FIFOs (`nomad alloc logs`, `StandardOutput=file:`); `journal` to the journal with the task's `NOMAD_*` fields (`journalctl NOMAD_ALLOC_ID=…`, `StandardOutput=journal`); `both` to Nomad's FIFOs, with the plugin's one forwarder copying Nomad's log files into the journal (stderr at priority 3). Output Nomad does not collect (`logs { disabled = true }`, `disable_log_collection`) goes to the journal either way.";
          };
          max_stop_timeout = mkOption {
            type = types.str;
            default = "5m";
            example = "30s";
            description = "The longest `TimeoutStopSec` a job's `properties` may set, as a Go duration like Nomad's `kill_timeout` (`30s`, `5m`, `1h30m`). A job asking for more (`infinity` and `0` included) is refused, naming the property and this key.";
          };
          start_timeout = mkOption {
            type = types.str;
            default = "2m";
            example = "30s";
            description = "How long StartTask waits for systemd's start job (a Go duration); a start that takes longer fails recoverably and its unit is removed. Also the longest `TimeoutStartSec` a job may set.";
          };
        };
      };
    };

    unitTemplates = mkOption {
      type = types.attrsOf (types.coercedTo types.path builtins.readFile types.lines);
      default = { };
      example = lib.literalExpression ''
        {
          "web@.service" = '''
            [Unit]
            Description=Web server of Nomad allocation %i

            [Service]
            ExecStart=''${pkgs.python3.interpreter} -m http.server $NOMAD_PORT_http
          ''';
          "worker@.service" = ./units + "/worker@.service";
        }
      '';
      description = ''
        Units (usually templates) for jobs that use `unit = "..."`, by unit file name: the unit
        text, or a path to a unit file. They are installed in `/etc/systemd/system` and added to
        {option}`services.nomad.systemdDriver.settings.allowed_units`: a template `web@.service` allows `web@*.service`.
        The driver adds Nomad's environment, resources and logging as a runtime drop-in.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = nomadCfg.enable;
        message = "services.nomad.systemdDriver needs services.nomad.enable = true.";
      }
      {
        assertion = nomadCfg.settings.client.enabled or false;
        message = "services.nomad.systemdDriver runs tasks on Nomad clients: set services.nomad.settings.client.enabled = true.";
      }
    ];

    services.nomad = {
      dropPrivileges = lib.mkForce false;
      extraSettingsPlugins = [ cfg.package ];
      settings = {
        client.enabled = lib.mkDefault true;
        plugin."nomad-driver-systemd".config = pluginConfig;
      };
    };

    environment.etc."nomad-driver-systemd/config.toml".source =
      toml.generate "nomad-driver-systemd.toml" pluginConfig;
    environment.systemPackages = [ cfg.package ];

    systemd.units = lib.mapAttrs (_: text: { inherit text; }) cfg.unitTemplates;

    # logs = "both": the driver, a child of the agent, forwards every task's lines into the
    # journal; journald's per-unit rate limit on the agent's unit would drop them. A window of
    # 1 µs lifts it; 0 would not (systemd passes only a non-zero interval on to journald).
    systemd.services.nomad.serviceConfig.LogRateLimitIntervalSec = lib.mkIf (cfg.settings.logs == "both") "1us";
  };
}
