{
  description = "Nomad task driver that runs each task as a systemd unit";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      forAllSystems =
        f:
        lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
          system:
          f (
            import nixpkgs {
              inherit system;
              overlays = [ self.overlays.default ];
              # Nomad is BUSL-licensed (unfree in nixpkgs): allow it and nothing else.
              config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "nomad" ];
            }
          )
        );

      # Every *.nix file in nixos-tests/ is a check: `{ pkgs, self, ... }: pkgs.testers.runNixOSTest { ... }`.
      vmTests =
        pkgs:
        lib.mapAttrs' (
          file: _:
          lib.nameValuePair (lib.removeSuffix ".nix" file) (
            import (./nixos-tests + "/${file}") { inherit pkgs self; }
          )
        ) (lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".nix" file) (builtins.readDir ./nixos-tests));
    in
    {
      overlays.default = final: _prev: {
        nomad-driver-systemd = final.callPackage ./nix/package.nix { };
      };

      nixosModules.default = ./nix/module.nix;

      packages = forAllSystems (pkgs: {
        default = pkgs.nomad-driver-systemd;
      });

      apps = forAllSystems (pkgs: {
        dev = {
          type = "app";
          program = lib.getExe (pkgs.callPackage ./nix/dev.nix { });
          meta.description = "A root `nomad agent -dev` with this driver loaded";
        };
      });

      checks = forAllSystems (pkgs: { package = pkgs.nomad-driver-systemd; } // vmTests pkgs);

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ pkgs.nomad-driver-systemd ];
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            rust-analyzer
            nixfmt
            nil
            nomad
          ];
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });
    };
}
