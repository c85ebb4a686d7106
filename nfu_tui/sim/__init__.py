"""Embedded simulator: a fake GitHub API and a fake NixFleet dashboard on 127.0.0.1."""
