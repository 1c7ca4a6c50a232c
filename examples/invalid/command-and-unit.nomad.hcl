# expect: config.unit: command and unit are exclusive: set exactly one
# A task is either a transient command or an installed unit, never both.

job "both" {
  group "web" {
    task "server" {
      driver = "systemd"

      config {
        command = "/bin/sleep"
        unit    = "web@${NOMAD_ALLOC_ID}.service"
      }
    }
  }
}
