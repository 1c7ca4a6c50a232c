# `nomad-driver-systemd validate` accepts the example jobs under the config.toml the module writes,
# and refuses the template job without the module's allow-list.
{ pkgs, self, ... }:

let
  common = import ../nix/vm-test-common.nix { inherit self; };
  jobs = ../examples/jobs;
  emptyConfig = pkgs.writeText "empty-config.toml" "";
in
pkgs.testers.runNixOSTest {
  name = "nomad-driver-systemd-validate-examples";
  nodes.machine = {
    imports = [ common.node ];
    services.nomad.systemdDriver.unitTemplates."web@.service" = ../examples/units + "/web@.service";
  };

  testScript = ''
    machine.wait_for_unit("multi-user.target")

    with subtest("config.toml allow-lists the installed template"):
        machine.succeed("grep -F 'web@*.service' /etc/nomad-driver-systemd/config.toml")

    with subtest("validate accepts the examples"):
        machine.succeed(
            "nomad-driver-systemd validate"
            " ${jobs}/hello.nomad.hcl ${jobs}/web-template.nomad.hcl ${jobs}/resources.nomad.hcl"
        )

    with subtest("without allowed_units the template job is refused, naming the key"):
        out = machine.fail(
            "nomad-driver-systemd validate --config ${emptyConfig} ${jobs}/web-template.nomad.hcl 2>&1"
        )
        assert "allowed_units" in out, out
  '';
}
