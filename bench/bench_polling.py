"""Benchmark: what idle polling and one explanation cost against the fake GitHub.

    .venv/bin/python bench/bench_polling.py [--hours 24] [--interval-minutes 5]

Serves the default scenario on 127.0.0.1 and runs GitHubClient.list_update_prs()
once per simulated interval (no real waiting). Prints figures only: requests per
hour after the warm-up poll, how many were answered 304, primary budget used, the
latency of a poll, and the request count of one PR explanation cold and with a warm
disk cache. The design target: at most 12 requests/hour at a 5-minute interval,
all 304 (free) on an unchanged repository.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from nfu_tui.clients.github import GitHubClient
from nfu_tui.sim.github import FakeGitHub
from nfu_tui.sim.scenario import default_scenario


async def no_sleep(_seconds: float) -> None:
    """Mergeability polling would otherwise sleep for real."""


async def run(hours: float, interval_minutes: float) -> None:
    fake = FakeGitHub(default_scenario())
    url = await fake.start()
    polls = max(1, round(hours * 60 / interval_minutes))
    try:
        with tempfile.TemporaryDirectory() as cache:
            async with GitHubClient(
                api_url=url, repo=fake.repo, token=fake.token, cache_dir=Path(cache), sleep=no_sleep
            ) as gh:
                t0 = time.perf_counter()
                prs = await gh.list_update_prs()
                warm_ms = (time.perf_counter() - t0) * 1000
                warm_requests = len(fake.request_log)
                start = len(fake.request_log)
                budget_before = gh.rate.remaining
                latencies = []
                for _ in range(polls):
                    t = time.perf_counter()
                    await gh.list_update_prs()
                    latencies.append((time.perf_counter() - t) * 1000)
                log = fake.request_log[start:]
                not_modified = sum(1 for r in log if r.status == 304)
                per_hour = len(log) / hours
                used = (budget_before or 0) - (gh.rate.remaining or 0)

                before = len(fake.request_log)
                t = time.perf_counter()
                await gh.explain(prs[0])
                cold_ms = (time.perf_counter() - t) * 1000
                cold = len(fake.request_log) - before
            async with GitHubClient(api_url=url, repo=fake.repo, token=fake.token, cache_dir=Path(cache)) as again:
                before = len(fake.request_log)
                t = time.perf_counter()
                await again.explain(prs[0])
                warm_expl_ms = (time.perf_counter() - t) * 1000
                warm = len(fake.request_log) - before
    finally:
        await fake.stop()

    print(f"idle polling, every {interval_minutes:g} min for {hours:g} h ({polls} polls, after one warm-up poll)")
    print(f"  warm-up poll:        {warm_requests} requests (listing + files of #{prs[0].number}), {warm_ms:.1f} ms")
    print(f"  requests per hour:   {per_hour:.1f}  (target <= {60 / interval_minutes:.0f})")
    print(f"  answered 304:        {not_modified}/{len(log)} ({100 * not_modified / max(1, len(log)):.0f} %)")
    print(f"  primary budget used: {used} of {gh.rate.limit}")
    print(
        f"  poll latency:        median {statistics.median(latencies):.2f} ms, "
        f"p95 {statistics.quantiles(latencies, n=20)[-1]:.2f} ms"
    )
    print(f"explain PR #{prs[0].number} (lock diff, compares, nixpkgs changelog)")
    print(f"  cold:                {cold} requests, {cold_ms:.0f} ms")
    print(f"  warm disk cache:     {warm} requests, {warm_expl_ms:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval-minutes", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(run(args.hours, args.interval_minutes))


if __name__ == "__main__":
    main()
