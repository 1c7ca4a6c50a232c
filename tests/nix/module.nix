# Evaluates nix/module.nix with nixpkgs' real services.nomad module (../shared/nix) in several
# configurations and checks what they produce. Throws, listing every mismatch, when one fails;
# otherwise returns what was checked (tests/nix_eval.rs reads it, `--strict --json` forces it all):
#
#   nix-instantiate --readonly-mode --eval --strict --json tests/nix/module.nix --arg shared ../shared/nix
{
  shared ? ../../../shared/nix,
  # The module under test (tests/nix_eval.rs passes a deliberately broken copy to see this fail).
  module ? ../../nix/module.nix,
}:

let
  h = import ./harness.nix { inherit shared; };
  inherit (h) lib expect;

  allowNomad =
    { lib, ... }:
    {
      nixpkgs.config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "nomad" ];
    };
  system = modules: h.evalNixos { modules = [ module allowNomad ] ++ modules; };
  eval = modules: (system modules).config;

  on = {
    services.nomad.enable = true;
    services.nomad.systemdDriver.enable = true;
  };

  customPackage = h.stubDrv "nomad-driver-systemd-custom" {
    pname = "nomad-driver-systemd";
    meta.mainProgram = "nomad-driver-systemd";
  };
  exampleUnit = ../../examples/units + "/web@.service";

  # What an evaluated system gives Nomad and the host.
  summarize =
    evaluated:
    let
      inherit (evaluated) config;
      nomad = config.services.nomad;
      service = config.systemd.services.nomad.serviceConfig or { };
      etc = config.environment.etc;
      pkgs = evaluated._module.args.pkgs;
      pluginDir = pkgs.symlinkJoin {
        name = "nomad-plugins";
        paths = nomad.extraSettingsPlugins;
      };
    in
    {
      pluginBlock = etc."nomad.json".source.value.plugin."nomad-driver-systemd".config or null;
      configToml = etc."nomad-driver-systemd/config.toml".source.value or null;
      configTomlName = etc."nomad-driver-systemd/config.toml".source.name or null;
      plugins = map toString nomad.extraSettingsPlugins;
      pluginDir = "${pluginDir}/bin";
      execStart = service.ExecStart or null;
      expectedExecStart = "${lib.getExe nomad.package} agent -config=/etc/nomad.json -plugin-dir=${pluginDir}/bin";
      dynamicUser = service.DynamicUser or null;
      logRateLimit = service.LogRateLimitIntervalSec or null;
      inherit (nomad) dropPrivileges;
      clientEnabled = nomad.settings.client.enabled or false;
      units = lib.mapAttrs (_: unit: unit.text) config.systemd.units;
      systemPackages = map (p: p.name) config.environment.systemPackages;
      failedAssertions = h.failedAssertions config;
      inherit (config) warnings;
    };

  defaultBlock = {
    enabled = true;
    slice = "nomad_tasks.slice";
    allowed_units = [ ];
    default_user = "";
    allowed_users = [ ];
    allow_supplementary_groups = false;
    allow_root = false;
    sandbox = "strict";
    allow_loosening = [ ];
    logs = "nomad";
    max_stop_timeout = "5m";
    start_timeout = "2m";
  };

  fullSettings = {
    enabled = false;
    slice = "batch-nomad.slice";
    allowed_units = [
      "backup-*.service"
      "web@*.service"
    ];
    allowed_properties = [
      "CPUQuota"
      "Nice"
    ];
    denied_properties = [ "PrivateNetwork" ];
    default_user = "nomad-task";
    allowed_users = [ "www-data" ];
    allow_supplementary_groups = true;
    allow_root = true;
    sandbox = "none";
    allow_loosening = [ "ProtectHome" ];
    logs = "both";
    max_stop_timeout = "10m";
    start_timeout = "30s";
  };

  configs = {
    # The driver on, everything else left to its default.
    on = summarize (system [ on ]);
    # Every option of services.nomad.systemdDriver set.
    full = summarize (system [
      on
      {
        services.nomad.systemdDriver = {
          package = customPackage;
          settings = fullSettings;
          unitTemplates = {
            "web@.service" = exampleUnit;
            "batch.service" = "[Service]\nExecStart=/bin/true\n";
          };
        };
      }
    ]);
    # Nomad without the driver: the module changes nothing.
    off = summarize (system [ { services.nomad.enable = true; } ]);
    # A user's `dropPrivileges = true` is overridden: the driver needs root.
    dropPrivileges = summarize (system [
      on
      { services.nomad.dropPrivileges = true; }
    ]);
    # Both of the module's assertions fire when their conditions fail.
    nomadOff = summarize (system [ { services.nomad.systemdDriver.enable = true; } ]);
    clientOff = summarize (system [
      on
      { services.nomad.settings.client.enabled = false; }
    ]);
  };

  result = system [ on ];
  driverOptions = result.options.services.nomad.systemdDriver;

  # Every visible option of services.nomad.systemdDriver as the NixOS manual renders it.
  docs = map (o: {
    inherit (o) name type description;
    default = o.default or null;
    example = o.example or null;
  }) (lib.filter (o: o.visible && !o.internal) (lib.optionAttrSetToDocList driverOptions));

  # The plugin keys' options: what tests/nix_eval.rs compares with `nomad-driver-systemd schema --json`.
  settingsOptions = lib.mapAttrs (_: opt: {
    type = h.typeName opt.type;
    description = opt.description or "";
    hasDefault = opt ? default;
    default = opt.default or null;
  }) (removeAttrs (driverOptions.settings.type.getSubOptions [ ]) [ "_module" ]);

  # literalExpression texts (examples, defaultText): tests/nix_eval.rs checks that they parse.
  literalExpressions = lib.concatMap (
    o:
    lib.concatMap (v: if builtins.isAttrs v && v._type or "" == "literalExpression" then [ v.text ] else [ ]) [
      (o.default or null)
      (o.example or null)
    ]
  ) docs;

  c = configs;
  checks =
    (lib.concatLists (
      lib.mapAttrsToList (
        name: s:
        lib.optionals (name != "off") [
          (expect "${name}: plugins" s.plugins [ (toString (if name == "full" then customPackage else result.config.services.nomad.systemdDriver.package)) ])
          (expect "${name}: ExecStart loads the plugin dir" s.execStart s.expectedExecStart)
          (expect "${name}: dropPrivileges" s.dropPrivileges false)
          (expect "${name}: DynamicUser" s.dynamicUser false)
          (expect "${name}: config.toml is the plugin block" s.configToml s.pluginBlock)
          (expect "${name}: the CLI is installed" (lib.elem (if name == "full" then customPackage.name else "nomad-driver-systemd-${(lib.importTOML ../../Cargo.toml).package.version}") s.systemPackages) true)
          (expect "${name}: warnings" s.warnings [ ])
        ]
      ) (removeAttrs c [ "nomadOff" ])
    ))
    ++ [
      (expect "on: plugin block" c.on.pluginBlock defaultBlock)
      (expect "on: client enabled" c.on.clientEnabled true)
      (expect "on: assertions" c.on.failedAssertions [ ])
      (expect "on: units" c.on.units { })
      (expect "on: config.toml file" c.on.configTomlName "nomad-driver-systemd.toml")
      (expect "full: plugin block" c.full.pluginBlock (
        fullSettings
        // {
          allowed_units = [
            "backup-*.service"
            "web@*.service"
            "batch.service"
          ];
        }
      ))
      (expect "full: units" c.full.units {
        "web@.service" = builtins.readFile exampleUnit;
        "batch.service" = "[Service]\nExecStart=/bin/true\n";
      })
      (expect "full: assertions" c.full.failedAssertions [ ])
      # logs = "both": the agent's unit must not rate-limit the forwarded lines
      (expect "full: LogRateLimitIntervalSec" c.full.logRateLimit "1us")
      (expect "on: LogRateLimitIntervalSec" c.on.logRateLimit null)
      (expect "off: plugin block" c.off.pluginBlock null)
      (expect "off: config.toml" c.off.configToml null)
      (expect "off: plugins" c.off.plugins [ ])
      (expect "off: dropPrivileges stays nixpkgs' default" c.off.dropPrivileges true)
      (expect "off: DynamicUser" c.off.dynamicUser true)
      (expect "off: ExecStart" c.off.execStart c.off.expectedExecStart)
      (expect "off: units" c.off.units { })
      (expect "dropPrivileges: plugin block" c.dropPrivileges.pluginBlock defaultBlock)
      (expect "nomadOff: assertion" c.nomadOff.failedAssertions [ "services.nomad.systemdDriver needs services.nomad.enable = true." ])
      (expect "clientOff: assertion" c.clientOff.failedAssertions [
        "services.nomad.systemdDriver runs tasks on Nomad clients: set services.nomad.settings.client.enabled = true."
      ])
      (expect "a misspelt settings key is refused" (h.fails
        (eval [
          on
          { services.nomad.systemdDriver.settings.allowed_unit = [ "web@*.service" ]; }
        ]).services.nomad.settings
      ) true)
      (expect "a mistyped settings value is refused" (h.fails
        (eval [
          on
          { services.nomad.systemdDriver.settings.slice = 5; }
        ]).services.nomad.settings
      ) true)
      (expect "every option is documented" (lib.filter (o: !(builtins.isString o.description) || o.description == "") docs) [ ])
      (expect "every option is typed" (lib.filter (o: o.type == "unspecified value") docs) [ ])
    ];
  failures = h.failures checks;
in
if failures == [ ] then
  {
    inherit
      configs
      docs
      settingsOptions
      literalExpressions
      ;
    checked = builtins.length checks;
  }
else
  throw "nix/module.nix evaluation checks failed:\n  ${lib.concatStringsSep "\n  " failures}"
