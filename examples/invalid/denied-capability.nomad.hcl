# expect: config.properties.AmbientCapabilities: property "AmbientCapabilities" is denied
# Capabilities escalate privilege: denied by default (operators may allow them explicitly).

job "caps" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command = "/bin/sleep"
        args    = ["60"]

        properties {
          AmbientCapabilities = "CAP_NET_ADMIN"
        }
      }
    }
  }
}
