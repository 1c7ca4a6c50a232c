# Evaluates flake.nix's `outputs` with stub inputs (nixpkgs' real lib, stub packages), without
# `nix flake`: every output a user or `nix flake check` reaches, and each VM test's node
# configuration with nixpkgs' real services.nomad module. Throws, listing every mismatch, when a
# check fails; otherwise returns each VM test's script for tests/nix_eval.rs to check as Python.
#
#   nix-instantiate --readonly-mode --eval --strict --json tests/nix/flake-outputs.nix --arg shared ../shared/nix
{
  shared ? ../../../shared/nix,
  # The flake under test (tests/nix_eval.rs passes a deliberately broken copy to see this fail).
  flake ? ../../flake.nix,
}:

let
  h = import ./harness.nix { inherit shared; };
  inherit (h) lib expect;
  root = dirOf flake;

  outputs = h.flakeOutputs flake { };
  systems = [
    "aarch64-linux"
    "x86_64-linux"
  ];
  version = (lib.importTOML (root + "/Cargo.toml")).package.version;
  vmTestNames = map (lib.removeSuffix ".nix") (
    lib.attrNames (
      lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".nix" file) (builtins.readDir (root + "/nixos-tests"))
    )
  );

  # The package set the flake builds with: the overlay, and the flake's own unfree predicate.
  overlaid = h.stubPkgs {
    overlays = [ outputs.overlays.default ];
    config.allowUnfree = true;
  };

  perSystem =
    system:
    let
      package = outputs.packages.${system}.default;
      app = outputs.apps.${system}.dev;
      checks = outputs.checks.${system};
      shell = outputs.devShells.${system}.default;
      vmTests = lib.mapAttrs (
        _: check:
        let
          test = check.test;
          nodes = lib.mapAttrs (
            _: node:
            let
              config = (h.evalNixos {
                modules = [ node ];
                pkgs = overlaid;
              }).config;
            in
            {
              failedAssertions = h.failedAssertions config;
              inherit (config) warnings;
              pluginBlock =
                config.environment.etc."nomad.json".source.value.plugin."nomad-driver-systemd".config or null;
              plugins = map toString config.services.nomad.extraSettingsPlugins;
              units = lib.attrNames config.systemd.units;
            }
          ) test.nodes;
        in
        {
          inherit (test) name testScript;
          inherit nodes;
        }
      ) (removeAttrs checks [ "package" ]);
    in
    {
      package = {
        inherit (package) name;
        mainProgram = package.meta.mainProgram;
        inherit (package.passthru) cargoBuildFlags;
        src = "${package.passthru.src}";
      };
      app = {
        inherit (app) type program;
        description = app.meta.description;
      };
      checks = lib.attrNames checks;
      checksPackage = toString checks.package;
      shell = {
        packages = map (p: p.name) shell.packages;
        inputsFrom = map (p: p.name) shell.args.inputsFrom;
        inherit (shell.args) RUST_SRC_PATH;
      };
      inherit vmTests;
    };

  results = lib.genAttrs systems perSystem;
  x86 = results.x86_64-linux;

  # `nix run .#dev`'s script, forced: every path and package it names.
  dev = overlaid.callPackage (root + "/nix/dev.nix") { };

  checks =
    [
      (expect "packages' systems" (lib.attrNames outputs.packages) systems)
      (expect "apps' systems" (lib.attrNames outputs.apps) systems)
      (expect "checks' systems" (lib.attrNames outputs.checks) systems)
      (expect "devShells' systems" (lib.attrNames outputs.devShells) systems)
      (expect "overlay adds the package" overlaid.nomad-driver-systemd.name "nomad-driver-systemd-${version}")
      (expect "nixosModules.default is nix/module.nix" outputs.nixosModules.default (root + "/nix/module.nix"))
      (expect "dev script names the driver" (lib.hasInfix (lib.getExe overlaid.nomad-driver-systemd) dev.text) true)
    ]
    ++ lib.concatMap (
      system:
      let
        r = results.${system};
      in
      [
        (expect "${system}: package name" r.package.name "nomad-driver-systemd-${version}")
        (expect "${system}: package mainProgram" r.package.mainProgram "nomad-driver-systemd")
        (expect "${system}: package builds the driver binary only" r.package.cargoBuildFlags [
          "--bin"
          "nomad-driver-systemd"
        ])
        (expect "${system}: apps.dev type" r.app.type "app")
        (expect "${system}: apps.dev program" (
          builtins.match "/nix/store/[^/]+-nomad-driver-systemd-dev/bin/nomad-driver-systemd-dev" r.app.program != null
        ) true)
        (expect "${system}: checks" r.checks (lib.sort lib.lessThan ([ "package" ] ++ vmTestNames)))
        (expect "${system}: checks.package is the package" r.checksPackage (toString outputs.packages.${system}.default))
        (expect "${system}: devShell tools" (lib.all (p: p != null) r.shell.packages) true)
      ]
      ++ lib.concatLists (
        lib.mapAttrsToList (
          name: test:
          [
            (expect "${system}: ${name}: test name" test.name "nomad-driver-systemd-${name}")
            (expect "${system}: ${name}: has nodes" (test.nodes != { }) true)
          ]
          ++ lib.concatLists (
            lib.mapAttrsToList (node: n: [
              (expect "${system}: ${name}: node ${node}: assertions" n.failedAssertions [ ])
              (expect "${system}: ${name}: node ${node}: warnings" n.warnings [ ])
              (expect "${system}: ${name}: node ${node}: plugin block" (n.pluginBlock != null) true)
              (expect "${system}: ${name}: node ${node}: driver in the plugin dir" n.plugins [ (toString overlaid.nomad-driver-systemd) ])
            ]) test.nodes
          )
        ) r.vmTests
      )
    ) systems;
  failures = h.failures checks;
in
if failures == [ ] then
  {
    inherit (x86) package app shell;
    checks = x86.checks;
    vmTests = lib.mapAttrs (_: t: {
      inherit (t) testScript;
      nodes = lib.attrNames t.nodes;
      units = lib.mapAttrs (_: n: n.units) t.nodes;
    }) x86.vmTests;
    checked = builtins.length checks;
  }
else
  throw "flake.nix evaluation checks failed:\n  ${lib.concatStringsSep "\n  " failures}"
