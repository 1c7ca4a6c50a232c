job "j" {
  group "g" {
    task "t" {
      driver = "systemd"
      config {
        command = "${"${"${x}"}"}"
        args = ["%{ for a in b }${a}%{ endfor }"]
      }
    }
  }
}
