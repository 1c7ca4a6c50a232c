# expect: config.command: exactly one of command or unit is required

job "neither" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        work_dir = "/local"
      }
    }
  }
}
