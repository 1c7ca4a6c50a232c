# expect: config.properties.LimitNOFILE: property "LimitNOFILE": invalid resource limit "lots"
# Property values are parsed as systemd would; a value systemd would reject is refused up front.

job "bad-value" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command = "/bin/sleep"
        args    = ["60"]

        properties {
          LimitNOFILE = "lots"
        }
      }
    }
  }
}
