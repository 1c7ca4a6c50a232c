# Shared by the scenarios in ../nixos-tests: the VM (a one-node Nomad cluster, server and client,
# with the driver from this flake) and Python helpers for their test scripts.
{ self, ... }:
{
  node =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];

      services.nomad = {
        enable = true;
        enableDocker = false;
        settings = {
          server = {
            enabled = true;
            bootstrap_expect = 1;
          };
          client = {
            enabled = true;
            # The test network (192.168.1.0/24): dynamic ports are allocated on its address.
            network_interface = "eth1";
            # VMs do not always expose a CPU frequency to fingerprint.
            cpu_total_compute = 4000;
          };
        };
        systemdDriver.enable = true;
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
      virtualisation = {
        cores = 2;
        memorySize = 2048;
      };
    };

  prelude = ''
    import json

    MIB = 1024 * 1024


    def wait_for_driver() -> None:
        """Waits until this node is ready and reports the systemd driver detected and healthy."""
        machine.wait_for_unit("nomad.service")
        machine.wait_until_succeeds("nomad node status -self | grep -q ready")
        machine.wait_until_succeeds(
            "nomad node status -self -json | jq -e '.Drivers.systemd | .Detected and .Healthy'"
        )


    def run_job(path: str) -> tuple[str, str]:
        """Submits a job file; returns the job id and the id of its first running allocation."""
        job = machine.succeed(f"nomad job run -output {path} | jq -r .Job.ID").strip()
        machine.succeed(f"nomad job run -detach {path}")
        alloc = machine.wait_until_succeeds(
            f"nomad job allocs -json {job} | jq -er 'map(select(.ClientStatus == \"running\"))[0].ID'",
            timeout=180,
        ).strip()
        return job, alloc


    def alloc_status(alloc: str) -> dict:
        return json.loads(machine.succeed(f"nomad alloc status -json {alloc}"))


    def task_unit(alloc: str) -> str:
        """The transient unit of a single-task allocation: nomad-<alloc id>-<task>-<suffix>.service."""
        out = machine.succeed(f"systemctl list-units 'nomad-{alloc}-*' --plain --no-legend")
        units = [line.split()[0] for line in out.splitlines()]
        assert len(units) == 1, f"expected one unit for allocation {alloc}, found {units}"
        return units[0]


    def unit_props(unit: str, *names: str) -> dict[str, str]:
        out = machine.succeed(f"systemctl show {unit} " + " ".join(f"-p {n}" for n in names))
        return {key: value for key, _, value in (line.partition("=") for line in out.splitlines())}


  '';
}
