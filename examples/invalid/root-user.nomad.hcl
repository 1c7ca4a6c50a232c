# expect: user: "root" refused: running tasks as root needs allow_root = true
# Tasks never run as root unless the operator sets allow_root = true.

job "root" {
  group "app" {
    task "app" {
      driver = "systemd"
      user   = "root"

      config {
        command = "/usr/bin/id"
      }
    }
  }
}
