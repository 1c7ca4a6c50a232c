# expect: config.properties.MemoryMax: "1G" exceeds the task's memory allocation
# A job may tighten Nomad's memory limit, never loosen it: raise resources.memory_max instead.

job "greedy" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command = "/bin/sleep"
        args    = ["60"]

        properties {
          MemoryMax = "1G"
        }
      }

      resources {
        memory = 128
      }
    }
  }
}
