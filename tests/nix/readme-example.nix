# Evaluates a NixOS flake example from the README (tests/nix_eval.rs extracts it to a directory
# that holds it as flake.nix, beside a copy of examples/units): its `outputs`, given this
# repository's flake as the `nomad-driver-systemd` input, and every NixOS configuration it
# defines, with nixpkgs' real services.nomad module. Returns what each configuration gives Nomad.
{
  shared ? ../../../shared/nix,
  example,
}:

let
  h = import ./harness.nix { inherit shared; };
  inherit (h) lib;
  driverFlake = h.flakeOutputs ../../flake.nix { };
  outputs = h.flakeOutputs example { nomad-driver-systemd = driverFlake; };
in
lib.mapAttrs (
  _: system:
  let
    inherit (system) config;
  in
  {
    failedAssertions = h.failedAssertions config;
    inherit (config) warnings;
    pluginBlock = config.environment.etc."nomad.json".source.value.plugin."nomad-driver-systemd".config or null;
    units = lib.mapAttrs (_: unit: unit.text) config.systemd.units;
    inherit (config.services.nomad) dropPrivileges;
  }
) outputs.nixosConfigurations
