# What the Nix evaluation checks share (tests/nix_eval.rs runs them): nixpkgs' `lib` from
# ../shared/nix, stub packages, and stubs of the few NixOS options that nixpkgs' `services.nomad`
# and our module touch. Nothing here builds: a stub package is an attribute set that looks like a
# derivation (name, outPath, meta) and keeps what it was made from, so the checks can read it.
{
  shared ? ../../../shared/nix,
}:

let
  # Debian's Nix (2.8) lacks builtins.readFileType (Nix 2.14), which current lib (lib.fileset,
  # lib.filesystem) uses. Every file imported through `scope` sees this `builtins`, and its own
  # imports go through `scope` too.
  builtinsShim = builtins // {
    readFileType =
      builtins.readFileType or (
        path:
        let
          name = baseNameOf path;
        in
        if name == "" then "directory" else (builtins.readDir (dirOf path)).${name}
      );
  };

  # `import nixpkgs { ... }` on the stub nixpkgs input (an attribute set with `__stubPkgs`)
  # returns the stub package set; any other import is a scoped import.
  scope = {
    builtins = builtinsShim;
    import = target: if builtins.isAttrs target && target ? __stubPkgs then target.__stubPkgs else scopedImport scope target;
  };

  importShimmed = scopedImport scope;

  lib = importShimmed (shared + "/nixpkgs-lib/lib");
  inherit (lib) mkOption types;

  # A derivation-shaped attribute set. `seed` (any JSON) makes the store path differ with content.
  stubDrv =
    name: extra:
    let
      hash = builtins.substring 0 32 (builtins.hashString "sha256" (name + builtins.toJSON (extra.seed or null)));
      drv = {
        type = "derivation";
        inherit name;
        outPath = "/nix/store/${hash}-${name}";
        drvPath = "/nix/store/${hash}-${name}.drv";
        outputs = [ "out" ];
        outputName = "out";
        meta = { };
      }
      // removeAttrs extra [ "seed" ];
    in
    drv // { out = drv; };

  # JSON values, as pkgs.formats.json's type admits them (TOML: the same without null).
  valueType =
    nullable:
    let
      value =
        (if nullable then types.nullOr else lib.id) (
          types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf value)
            (types.listOf value)
          ]
        )
        // {
          description = if nullable then "JSON value" else "TOML value";
        };
    in
    value;

  # TOML has no null: nixpkgs' generator fails on one at build time, this one at evaluation.
  noNulls =
    where: value:
    if value == null then
      throw "formats.toml: ${where} is null, which TOML cannot hold"
    else if builtins.isAttrs value then
      lib.all lib.id (lib.mapAttrsToList (k: noNulls "${where}.${k}") value)
    else if builtins.isList value then
      lib.all lib.id (lib.imap0 (i: noNulls "${where}[${toString i}]") value)
    else
      true;

  # Stub nixpkgs: `stubPkgs { system, overlays, config }` as `import nixpkgs { ... }` takes it.
  stubPkgs =
    {
      system ? "x86_64-linux",
      overlays ? [ ],
      config ? { },
    }:
    let
      unfreeAllowed =
        pkg: (config.allowUnfree or false) || (config.allowUnfreePredicate or (_: false)) pkg;
      simple = name: stubDrv name { meta.mainProgram = name; };
      base = final: {
        inherit lib system config;
        callPackage = lib.callPackageWith final;

        coreutils = simple "coreutils";
        iproute2 = simple "iproute2";
        iptables = simple "iptables";
        curl = simple "curl";
        jq = simple "jq";
        cargo = simple "cargo";
        rustc = simple "rustc";
        clippy = simple "clippy";
        rustfmt = simple "rustfmt";
        rust-analyzer = simple "rust-analyzer";
        nixfmt = simple "nixfmt";
        nil = simple "nil";
        python3 =
          let
            drv = simple "python3";
          in
          drv // { interpreter = "${drv}/bin/python3"; };

        # Unfree (BUSL) in nixpkgs: usable only if the config allows it, as in nixpkgs.
        nomad =
          let
            drv = stubDrv "nomad-1.10.0" {
              pname = "nomad";
              version = "1.10.0";
              meta = {
                mainProgram = "nomad";
                license.free = false;
              };
            };
          in
          if unfreeAllowed drv then drv else throw "nomad is unfree and not allowed by this nixpkgs config";

        rustPlatform = {
          rustLibSrc = stubDrv "rust-lib-src" { };
          buildRustPackage =
            args:
            assert lib.assertMsg (builtins.pathExists args.cargoLock.lockFile) "buildRustPackage: cargoLock.lockFile is missing";
            stubDrv "${args.pname}-${args.version}" {
              inherit (args) pname version meta;
              passthru = {
                inherit (args) src cargoBuildFlags;
              };
              seed = args.version;
            };
        };

        writeShellApplication =
          {
            name,
            text,
            runtimeInputs ? [ ],
            ...
          }:
          stubDrv name {
            meta.mainProgram = name;
            inherit text runtimeInputs;
            seed = text;
          };

        writeText = name: text: stubDrv name { inherit text; seed = text; };

        symlinkJoin =
          { name, paths, ... }:
          stubDrv name {
            inherit paths;
            seed = map toString paths;
          };

        mkShell =
          args:
          stubDrv "nix-shell" {
            inherit args;
            packages = args.packages or [ ];
          };

        formats = {
          json =
            { }:
            {
              type = valueType true;
              generate = name: value: stubDrv name { inherit value; seed = value; };
            };
          toml =
            { }:
            {
              type = types.attrsOf (valueType false);
              generate =
                name: value:
                assert noNulls name value;
                stubDrv name { inherit value; seed = value; };
            };
        };

        # A VM test is not run here: keep what it was made of for the checks to read.
        testers.runNixOSTest =
          args:
          stubDrv "vm-test-run-${args.name}" {
            test = args;
            seed = args.name;
          };
      };
    in
    lib.fix (lib.foldl' (f: overlay: lib.extends overlay f) base overlays);

  # The NixOS options that nixpkgs' nomad module, our module, the VM tests' nodes and the README's
  # example set, typed as NixOS types them (as far as these modules reach).
  nixosStubs =
    let
      unitValue = types.oneOf [
        types.bool
        types.int
        types.str
        types.path
        (types.listOf (types.either types.str types.path))
      ];
    in
    {
      options = {
        assertions = mkOption {
          type = types.listOf (
            types.submodule {
              options.assertion = mkOption { type = types.bool; };
              options.message = mkOption { type = types.str; };
            }
          );
          default = [ ];
        };
        warnings = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        environment.etc = mkOption {
          type = types.attrsOf (
            types.submodule {
              options.source = mkOption { type = types.path; };
            }
          );
          default = { };
        };
        environment.systemPackages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        systemd.services = mkOption {
          type = types.attrsOf (
            types.submodule {
              options = {
                description = mkOption {
                  type = types.str;
                  default = "";
                };
                wantedBy = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                wants = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                after = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                };
                restartTriggers = mkOption {
                  type = types.listOf types.unspecified;
                  default = [ ];
                };
                path = mkOption {
                  type = types.listOf (types.either types.package types.str);
                  default = [ ];
                };
                serviceConfig = mkOption {
                  type = types.attrsOf unitValue;
                  default = { };
                };
                unitConfig = mkOption {
                  type = types.attrsOf unitValue;
                  default = { };
                };
              };
            }
          );
          default = { };
        };
        systemd.units = mkOption {
          type = types.attrsOf (
            types.submodule {
              options.text = mkOption {
                type = types.nullOr types.str;
                default = null;
              };
              options.enable = mkOption {
                type = types.bool;
                default = true;
              };
            }
          );
          default = { };
        };
        virtualisation = {
          docker.enable = mkOption {
            type = types.bool;
            default = false;
          };
          # Set by the VM tests' nodes (options of NixOS's qemu-vm module).
          cores = mkOption {
            type = types.ints.positive;
            default = 1;
          };
          memorySize = mkOption {
            type = types.ints.positive;
            default = 1024;
          };
        };
        nixpkgs.config = mkOption {
          type = types.attrsOf types.anything;
          default = { };
        };
      };
    };

  # A NixOS-like system: the stubs, nixpkgs' real services.nomad module, and `modules`. Without
  # `pkgs`, the package set follows `nixpkgs.config`, as NixOS's does.
  evalNixos =
    {
      modules,
      pkgs ? null,
    }:
    lib.evalModules {
      modules = [
        nixosStubs
        (importShimmed (shared + "/nomad-module.nix"))
        (
          { config, ... }:
          {
            _module.args.pkgs = if pkgs != null then pkgs else stubPkgs { config = config.nixpkgs.config; };
          }
        )
      ]
      ++ modules;
    };

  # A flake's `outputs`, called as `nix flake` would with these inputs and `self`, without
  # `nix flake`. `import nixpkgs { ... }` yields the stub packages (`scope` above), `nixpkgs.lib`
  # is the real lib, and `nixpkgs.lib.nixosSystem` a NixOS-like evaluation.
  nixpkgsInput = {
    __stubPkgs = stubPkgs;
    lib = lib // {
      nixosSystem = args: evalNixos { inherit (args) modules; };
    };
    outPath = "/nix/store/00000000000000000000000000000000-nixpkgs-stub";
  };
  flakeOutputs =
    flakeFile: inputs:
    let
      outputs = (importShimmed flakeFile).outputs (
        {
          self = outputs // {
            outPath = dirOf flakeFile;
          };
          nixpkgs = nixpkgsInput;
        }
        // inputs
      );
    in
    outputs;

  # Messages of the assertions that fail, and the warnings, as NixOS would show them.
  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # Canonical name of an option type: `nullOr(listOf(str))`.
  typeName =
    type:
    if type.nestedTypes ? elemType then "${type.name}(${typeName type.nestedTypes.elemType})" else type.name;

  # `expect name actual expected`: null when equal, else a message. Collect with `failures`.
  expect =
    name: actual: expected:
    if actual == expected then
      null
    else
      "${name}: got ${builtins.toJSON actual}, expected ${builtins.toJSON expected}";
  failures = lib.filter (x: x != null);

  # Whether evaluating `value` deeply throws (a type error, a missing option, a failed assert).
  fails = value: !(builtins.tryEval (builtins.deepSeq value value)).success;
in
{
  inherit
    lib
    importShimmed
    stubDrv
    stubPkgs
    evalNixos
    flakeOutputs
    failedAssertions
    typeName
    expect
    failures
    fails
    ;
}
