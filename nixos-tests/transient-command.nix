# A `command` job runs as a transient unit in nomad_tasks.slice and its output reaches `nomad alloc logs`.
{ pkgs, self, ... }:

let
  common = import ../nix/vm-test-common.nix { inherit self; };
in
pkgs.testers.runNixOSTest {
  name = "nomad-driver-systemd-transient-command";
  nodes.machine = common.node;

  testScript = common.prelude + ''
    wait_for_driver()
    job, alloc = run_job("${../examples/jobs/hello.nomad.hcl}")

    with subtest("the task runs as a transient unit in nomad_tasks.slice"):
        unit = task_unit(alloc)
        props = unit_props(unit, "ActiveState", "Slice")
        assert props == {"ActiveState": "active", "Slice": "nomad_tasks.slice"}, props

    with subtest("its output reaches nomad alloc logs"):
        machine.wait_until_succeeds(f"nomad alloc logs {alloc} | grep -q 'hello from systemd'")

    with subtest("nomad-driver-systemd list shows it"):
        machine.succeed(f"nomad-driver-systemd list | grep -q {alloc[:8]}")

    with subtest("stopping the job stops the unit"):
        machine.succeed(f"nomad job stop {job}")
        machine.wait_until_fails(f"systemctl is-active --quiet {unit}")
  '';
}
