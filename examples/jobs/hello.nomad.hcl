# A command run as a transient unit: it says hello (see `nomad alloc logs`) and keeps running.
#
#   nomad job run examples/jobs/hello.nomad.hcl
#   nomad-driver-systemd list

job "hello" {
  datacenters = ["*"]

  group "hello" {
    task "hello" {
      driver = "systemd"

      config {
        command = "/bin/sh"
        args    = ["-c", "echo hello from systemd; exec sleep infinity"]
      }

      # systemd gives a unit only the environment Nomad hands the driver: name the tools' dirs
      # (NixOS keeps them in /run/current-system/sw/bin).
      env {
        PATH = "/run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin"
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
