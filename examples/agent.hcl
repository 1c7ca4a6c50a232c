# A development agent with nomad-driver-systemd, for
#
#   sudo nomad agent -dev -plugin-dir=<dir holding only nomad-driver-systemd> -config=examples/agent.hcl
#
# (`nix run .#dev` does exactly this). The agent must run as root: it starts the driver as its
# child, and the driver creates and stops units through systemd on the system D-Bus.
# examples/config.toml holds the same plugin settings for `nomad-driver-systemd validate` and `list`.

client {
  enabled = true
}

server {
  # memory_max (examples/jobs/resources.nomad.hcl) reaches drivers only with oversubscription on.
  default_scheduler_config {
    memory_oversubscription_enabled = true
  }
}

plugin "nomad-driver-systemd" {
  config {
    # Installed units that jobs may start with `unit = "..."` (see examples/units/web@.service).
    allowed_units = ["web@*.service"]
  }
}
