{
  description = "nfu-tui: merge and deploy flake.lock update PRs across a NixOS fleet, from the terminal";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        nfu-tui = pkgs.callPackage ./nix/package.nix { };
        default = nfu-tui;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/nfu-tui";
        };
      });

      overlays.default = final: prev: { nfu-tui = final.callPackage ./nix/package.nix { }; };

      # services.nfu-tui-auto: `nfu-tui auto` as a hardened systemd service (see README.md).
      nixosModules.default = import ./nix/module.nix self;
    };
}
