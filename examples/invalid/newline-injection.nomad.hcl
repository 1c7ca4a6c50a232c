# expect: config.properties.Description: property "Description": value "innocent\nExecStartPre
# expect: contains a control character
# A newline in a value must never become a directive of its own (here: a root ExecStartPre).

job "injection" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command = "/bin/sleep"
        args    = ["60"]

        properties {
          Description = "innocent\nExecStartPre=+/bin/sh -c 'id > /tmp/pwned'"
        }
      }
    }
  }
}
