# expect: config.properties.User: property "User" is owned by the driver
# Identity comes from the task's `user`, never from properties (User= is the driver's own).

job "denied" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command = "/usr/bin/id"

        properties {
          User = "root"
        }
      }
    }
  }
}
