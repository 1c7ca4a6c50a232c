# `unitTemplates` installs and allow-lists web@.service; a `unit = "web@${NOMAD_ALLOC_ID}.service"` job
# starts an instance with Nomad's drop-in, which serves on the port Nomad allocated.
{ pkgs, self, ... }:

let
  common = import ../nix/vm-test-common.nix { inherit self; };
in
pkgs.testers.runNixOSTest {
  name = "nomad-driver-systemd-template-unit";
  nodes.machine = {
    imports = [ common.node ];
    # The same server as examples/units/web@.service, with NixOS's python3 by store path.
    services.nomad.systemdDriver.unitTemplates."web@.service" = ''
      [Unit]
      Description=Web server of Nomad allocation %i

      [Service]
      ExecStart=${pkgs.python3.interpreter} -m http.server $NOMAD_PORT_http
    '';
  };

  testScript = common.prelude + ''
    wait_for_driver()
    job, alloc = run_job("${../examples/jobs/web-template.nomad.hcl}")
    unit = f"web@{alloc}.service"
    dropins = f"/run/systemd/system/{unit}.d/*.conf"

    with subtest("the template instance runs with Nomad's drop-in"):
        machine.wait_for_unit(unit)
        machine.succeed(f"ls {dropins}")

    with subtest("it serves on the port Nomad allocated"):
        ports = alloc_status(alloc)["AllocatedResources"]["Shared"]["Ports"]
        http = next(p for p in ports if p["Label"] == "http")
        machine.wait_until_succeeds(f"curl -fsS http://{http['HostIP']}:{http['Value']}/ > /dev/null")

    with subtest("stopping the job stops the instance and removes the drop-in"):
        machine.succeed(f"nomad job stop {job}")
        machine.wait_until_fails(f"systemctl is-active --quiet {unit}")
        machine.wait_until_fails(f"ls {dropins}")
  '';
}
