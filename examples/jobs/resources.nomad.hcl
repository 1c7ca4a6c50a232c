# Nomad's resources enforced by systemd: memory becomes MemoryLow (the reservation), memory_max
# MemoryMax (the hard limit), cpu a CPUWeight; CPU, memory and task accounting are always on.
# memory_max needs memory oversubscription enabled in the scheduler (examples/agent.hcl does).
#
#   systemctl show -p MemoryLow -p MemoryMax -p CPUWeight <unit>

job "resources" {
  datacenters = ["*"]

  group "resources" {
    task "resources" {
      driver = "systemd"

      config {
        command = "/bin/sh"
        args    = ["-c", "echo limits applied; exec sleep infinity"]
      }

      env {
        PATH = "/run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin"
      }

      resources {
        cpu        = 200
        memory     = 128
        memory_max = 256
      }
    }
  }
}
