# `nix run .#dev`: a throw-away `nomad agent -dev` (server and client in one) with this driver loaded.
{
  lib,
  writeShellApplication,
  coreutils,
  nomad,
  nomad-driver-systemd,
}:

let
  examples = ../examples;
in
writeShellApplication {
  name = "nomad-driver-systemd-dev";
  runtimeInputs = [
    coreutils
    nomad
  ];
  text = ''
    if [ "$(id -u)" -ne 0 ]; then
      cat >&2 <<EOF
    The driver creates and stops systemd units over the system D-Bus, which needs root,
    and Nomad starts the driver as its own child, so the dev agent must run as root:

      sudo nix run .#dev
    EOF
      exit 1
    fi

    # Nomad runs every file in the plugin dir: give it a directory holding the driver alone.
    plugin_dir=$(mktemp -d -t nomad-driver-systemd-dev.XXXXXX)
    trap 'rm -rf "$plugin_dir"' EXIT
    ln -s ${lib.getExe nomad-driver-systemd} "$plugin_dir/nomad-driver-systemd"

    cat <<EOF
    Starting a dev Nomad agent with nomad-driver-systemd (Ctrl-C stops it and its jobs).
    In another shell, from a checkout of the repository (the examples are also in ${examples}):

      nomad job run examples/jobs/hello.nomad.hcl    # prints the allocation id
      nomad alloc logs <alloc id>                    # "hello from systemd"
      systemctl list-units 'nomad-*'                 # the task's unit, in nomad_tasks.slice
      ${lib.getExe nomad-driver-systemd} list
      nomad job stop <job name>                      # names: nomad job status

    Web UI: http://127.0.0.1:4646

    EOF

    nomad agent -dev -plugin-dir="$plugin_dir" -config=${../examples/agent.hcl} "$@"
  '';
}
