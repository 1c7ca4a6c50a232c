# Restarting nomad.service leaves the task's unit running throughout; the new plugin process recovers
# the task (same unit, same invocation, no restart) and can still stop it.
{ pkgs, self, ... }:

let
  common = import ../nix/vm-test-common.nix { inherit self; };
in
pkgs.testers.runNixOSTest {
  name = "nomad-driver-systemd-agent-restart";
  nodes.machine = common.node;

  testScript = common.prelude + ''
    fingerprint = "nomad node status -self -json | jq -r .Drivers.systemd.UpdateTime"

    wait_for_driver()
    job, alloc = run_job("${../examples/jobs/hello.nomad.hcl}")
    unit = task_unit(alloc)
    invocation = unit_props(unit, "InvocationID")["InvocationID"]
    fingerprinted = machine.succeed(fingerprint)

    with subtest("the unit stays active while nomad.service restarts"):
        machine.succeed(
            f"(while :; do systemctl is-active {unit} >> /tmp/watch.log; sleep 0.1; done) > /dev/null 2>&1 &"
            " echo $! > /tmp/watch.pid"
        )
        machine.succeed("systemctl restart nomad.service")
        wait_for_driver()
        # A new plugin process has fingerprinted, so recovery has run.
        machine.wait_until_succeeds(f"[ \"$({fingerprint})\" != '{fingerprinted.strip()}' ]")
        machine.succeed("kill $(cat /tmp/watch.pid)")
        states = machine.succeed("cat /tmp/watch.log").split()
        assert states and set(states) == {"active"}, states

    with subtest("the driver recovered the task instead of restarting it"):
        status = alloc_status(alloc)
        assert status["ClientStatus"] == "running", status["ClientStatus"]
        for task, state in status["TaskStates"].items():
            assert state["State"] == "running" and state["Restarts"] == 0, (task, state)
        assert task_unit(alloc) == unit
        assert unit_props(unit, "InvocationID")["InvocationID"] == invocation

    with subtest("and still controls it: stopping the job stops the unit"):
        machine.succeed(f"nomad job stop {job}")
        machine.wait_until_fails(f"systemctl is-active --quiet {unit}")
  '';
}
