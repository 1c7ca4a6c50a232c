# expect: config.work_dir: "local" must be an absolute path

job "relative" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command  = "/bin/sleep"
        work_dir = "local"
      }
    }
  }
}
