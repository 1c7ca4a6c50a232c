job "j" {
  group "g" {
    task "t" {
      driver = "systemd"
      config {
        command = <<EOF
x
      }
    }
  }
}
