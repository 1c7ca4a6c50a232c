job "j" {
  group "g" {
    task "t" {
      driver = "systemd"
      config {
        command = "/bin/sleep"
        args = ["300"]
      }
    }
  }
}
