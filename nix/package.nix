# nfu-tui built with nixpkgs' Python packaging from pyproject.toml (used by ../flake.nix).
# The dependency list is read from pyproject.toml, so the two cannot drift; every name there is
# also the nixpkgs python3Packages attribute. The exact pins (textual==8.2.8 keeps the test
# snapshots stable) are relaxed: the app runs on nixpkgs' current versions. Tests are off in
# the build (they start simulators on 127.0.0.1 and compare terminal snapshots); run `make test`.
{ lib, python3Packages }:

let
  project = (builtins.fromTOML (builtins.readFile ../pyproject.toml)).project;
  # "textual==8.2.8" -> "textual", "httpx>=0.28,<0.29" -> "httpx"
  attrName = spec: lib.toLower (builtins.head (builtins.match "([A-Za-z0-9_.-]+).*" spec));
in
python3Packages.buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  pyproject = true; # format = "pyproject" in older nixpkgs

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [ ../pyproject.toml ../README.md ../nfu_tui ];
  };

  build-system = with python3Packages; [ setuptools wheel ];
  dependencies = map (spec: python3Packages.${attrName spec}) project.dependencies;
  pythonRelaxDeps = true;

  doCheck = false;
  pythonImportsCheck = [ "nfu_tui" "nfu_tui.cli" ];

  meta = {
    description = project.description;
    license = lib.licenses.mit;
    mainProgram = "nfu-tui";
    platforms = lib.platforms.unix;
  };
}
