# Nomad's memory, memory_max and cpu reach the task's unit: visible in `systemctl show` and the cgroup.
{ pkgs, self, ... }:

let
  common = import ../nix/vm-test-common.nix { inherit self; };
in
pkgs.testers.runNixOSTest {
  name = "nomad-driver-systemd-resources";
  nodes.machine = {
    imports = [ common.node ];
    # Without memory oversubscription the scheduler drops memory_max.
    services.nomad.settings.server.default_scheduler_config.memory_oversubscription_enabled = true;
  };

  testScript = common.prelude + ''
    wait_for_driver()
    job, alloc = run_job("${../examples/jobs/resources.nomad.hcl}")
    unit = task_unit(alloc)
    (task, resources), = alloc_status(alloc)["AllocatedResources"]["Tasks"].items()
    memory, memory_max = resources["Memory"]["MemoryMB"], resources["Memory"]["MemoryMaxMB"]
    props = unit_props(unit, "MemoryLow", "MemoryMax", "CPUWeight", "ControlGroup")
    cgroup = "/sys/fs/cgroup" + props["ControlGroup"]
    print(f"{task}: memory={memory} memory_max={memory_max} -> {props}")

    with subtest("memory is the reservation and memory_max the hard limit"):
        assert memory_max != 0, "the example should set memory_max"
        assert props["MemoryLow"] == str(memory * MIB), props
        limit = "infinity" if memory_max == -1 else str(memory_max * MIB)
        assert props["MemoryMax"] == limit, props
        machine.succeed(f"grep -qx {'max' if limit == 'infinity' else limit} {cgroup}/memory.max")

    with subtest("cpu becomes a CPU weight"):
        weight = int(props["CPUWeight"])
        assert 1 <= weight <= 10000, props
        machine.succeed(f"grep -qx {weight} {cgroup}/cpu.weight")

    machine.succeed(f"nomad job stop {job}")
    machine.wait_until_fails(f"systemctl is-active --quiet {unit}")
  '';
}
