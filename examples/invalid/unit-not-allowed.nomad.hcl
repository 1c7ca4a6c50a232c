# expect: config.unit: "db.service" does not match the plugin's allowed_units ["web@*.service"]
# Unit mode only starts units the operator allow-listed (allowed_units in the plugin config).

job "bad-unit" {
  group "web" {
    task "server" {
      driver = "systemd"

      config {
        unit = "db.service"
      }
    }
  }
}
