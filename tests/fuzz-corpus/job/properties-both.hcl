job "j" {
  group "g" {
    task "t" {
      driver = "systemd"
      config {
        command = "/bin/true"
        properties = { Nice = "5" }
        properties { Nice = "6" }
      }
    }
  }
}
