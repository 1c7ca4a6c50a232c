{ lib, rustPlatform }:

let
  fs = lib.fileset;
in
rustPlatform.buildRustPackage {
  pname = "nomad-driver-systemd";
  version = (lib.importTOML ../Cargo.toml).package.version;

  # Only what cargo reads, so that editing docs, examples or Nix files does not rebuild.
  src = fs.toSource {
    root = ../.;
    fileset = fs.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../build.rs
      ../proto
      ../src
      (fs.maybeMissing ../benches)
      (fs.maybeMissing ../tests)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # Nomad executes every file in its plugin_dir, and NixOS links this package's bin/ there:
  # build the driver binary only.
  cargoBuildFlags = [
    "--bin"
    "nomad-driver-systemd"
  ];

  # The integration tests need root and a private systemd, which the build sandbox lacks;
  # they run in CI and in the NixOS VM tests (nixos-tests/). Unit tests run here.
  cargoTestFlags = [ "--lib" ];

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    [ "$(ls "$out/bin")" = nomad-driver-systemd ] || { echo "bin/ must hold nomad-driver-systemd only" >&2; exit 1; }
    "$out/bin/nomad-driver-systemd" --help > /dev/null
    runHook postInstallCheck
  '';

  meta = {
    description = "Nomad task driver that runs each task as a systemd unit";
    mainProgram = "nomad-driver-systemd";
    platforms = lib.platforms.linux;
  };
}
