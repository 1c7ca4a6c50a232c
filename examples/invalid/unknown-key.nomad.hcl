# expect: config.image: unknown key
# The systemd driver's config has command, args, unit, properties and work_dir; nothing else.

job "docker-habit" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command = "/bin/sleep"
        image   = "nginx:latest"
      }
    }
  }
}
