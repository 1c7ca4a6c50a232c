# expect: HCL parse error in line 12
# validate reports the parser's message, with the line.

job "broken" {
  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command = "/bin/sleep"
        args    = ["60"
      }
    }
  }
}
