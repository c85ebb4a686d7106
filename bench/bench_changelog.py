"""Benchmark: build a changelog from 20,000 nixpkgs-style commit subjects.

Run: ``.venv/bin/python bench/bench_changelog.py [N]``; prints subjects per second.
The subjects are generated with a fixed seed so runs are comparable.
"""

from __future__ import annotations

import random
import sys
import time

from nfu_tui.domain.changelog import build_changelog


def make_commits(n: int, seed: int = 1) -> list[tuple[str, str]]:
    """A realistic mix: bumps, inits, removals, modules, merges, noise, CVEs, junk."""
    rng = random.Random(seed)
    pkgs = [f"pkg{i}" for i in range(3000)] + [f"python3Packages.lib{i}" for i in range(1000)]
    out: list[tuple[str, str]] = []
    for i in range(n):
        p = rng.choice(pkgs)
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        roll = rng.random()
        body = ""
        if roll < 0.55:
            subject = f"{p}: {a}.{b}.0 -> {a}.{b + 1}.0"
            if rng.random() < 0.03:
                body = f"Fixes CVE-2025-{rng.randint(1000, 99999)}"
        elif roll < 0.62:
            subject = f"{p}: init at {a}.{b}"
        elif roll < 0.65:
            subject = f"{p}: remove"
        elif roll < 0.72:
            subject = f"nixos/module{rng.randint(0, 300)}: add option{i}"
        elif roll < 0.80:
            subject = f"Merge pull request #{100000 + i} from someone/branch-{i}"
            body = f"\n[25.11] {p}: {a}.{b} -> {a}.{b + 1}"
        elif roll < 0.85:
            subject = rng.choice(["treewide: format with nixfmt", "maintainers: add someone", "Merge staging-next into master"])
        elif roll < 0.99:
            subject = f"{p}: fix build with gcc {a}"
        else:
            subject = "x" * rng.randint(1000, 20000)  # junk
        out.append((subject, body))
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    commits = make_commits(n)
    build_changelog(commits[:100])  # warm up regex caches
    start = time.perf_counter()
    changelog = build_changelog(commits)
    elapsed = time.perf_counter() - start
    print(f"changelog: {n} subjects in {elapsed * 1000:.1f} ms = {n / elapsed:,.0f} subjects/s")
    print(f"  {len(changelog.entries)} entries; {changelog.summary()}")


if __name__ == "__main__":
    main()
