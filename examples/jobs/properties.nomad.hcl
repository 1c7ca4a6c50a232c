# Extra systemd directives for a transient unit, in unit-file spelling. The driver types each
# value (as systemd would parse it) and checks the name against the plugin's property policy
# (allowed_properties / denied_properties): sandboxing, resource limits and rlimits are allowed
# by default; identities, capabilities and devices are not.

job "sandboxed" {
  datacenters = ["*"]

  group "app" {
    task "app" {
      driver = "systemd"

      config {
        command  = "/bin/sh"
        args     = ["-c", "echo open files: $(ulimit -n); exec sleep infinity"]
        work_dir = "/local"

        properties {
          ProtectSystem           = "strict"
          ProtectHome             = "yes"
          PrivateDevices          = "yes"
          NoNewPrivileges         = "yes"
          ProtectKernelTunables   = "yes"
          RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6"
          SystemCallFilter        = "@system-service"
          LimitNOFILE             = "65536"
          MemorySwapMax           = "0"
          TasksMax                = "64"
        }
      }

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
