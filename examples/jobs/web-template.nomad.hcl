# Unit mode: an instance of the installed template examples/units/web@.service, one per
# allocation. The driver writes Nomad's settings as a runtime drop-in
# (/run/systemd/system/web@<alloc id>.service.d/50-nomad-driver-systemd.conf) and starts it; the
# server listens on the port Nomad allocated ($NOMAD_PORT_http).
#
# Needs allowed_units = ["web@*.service"] in the plugin config (examples/agent.hcl).

job "web" {
  datacenters = ["*"]

  group "web" {
    network {
      port "http" {}
    }

    task "server" {
      driver = "systemd"

      config {
        # ${NOMAD_ALLOC_ID} is resolved by Nomad when the task starts.
        unit = "web@${NOMAD_ALLOC_ID}.service"
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
