"""Pytest fixtures for tests that need the simulator (re-exported by ``tests/conftest.py``).

* :func:`fast_scenario` — the default scenario, sped up: heartbeats every 0.2 s, a
  sync beacon every second, commands 100× faster (a switch takes well under 1 s).
* ``sim`` — a started :class:`~nfu_tui.sim.runner.Simulator` on the fast scenario;
  parametrize it indirectly with a :class:`~nfu_tui.sim.scenario.Scenario`.
* ``sim_factory`` — ``await sim_factory(scenario)`` for several/custom simulators.
* ``sim_config`` — ``config.toml`` (+ secret files) for ``sim`` in ``tmp_path``.
* ``sim_thread`` — a :class:`~nfu_tui.sim.runner.SimulatorThread` for sync tests
  (``sim_thread.sim`` is the simulator, ``sim_thread.call(fn, *args)`` runs hooks on its loop).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from nfu_tui.sim.scenario import Scenario, default_scenario

__all__ = ["fast_scenario", "sim", "sim_config", "sim_factory", "sim_thread"]

FAST = {"heartbeat_seconds": 0.2, "sync_seconds": 1.0, "speed": 100.0}


def fast_scenario(**overrides: Any) -> Scenario:
    """The default scenario with fast heartbeats and commands; ``overrides`` set Scenario fields."""
    scenario = default_scenario()
    for key, value in (FAST | overrides).items():
        if key not in Scenario.__dataclass_fields__:
            raise TypeError(f"Scenario has no field {key!r}")
        setattr(scenario, key, value)
    return scenario


@pytest_asyncio.fixture
async def sim_factory() -> AsyncIterator[Callable[[Scenario], Awaitable[Any]]]:
    """Start simulators on demand; all are stopped at teardown."""
    from nfu_tui.sim.runner import Simulator

    started: list[Simulator] = []

    async def make(scenario: Scenario | None = None) -> Simulator:
        simulator = Simulator(scenario or fast_scenario())
        await simulator.start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in reversed(started):
        await simulator.stop()


@pytest_asyncio.fixture
async def sim(request: pytest.FixtureRequest, sim_factory: Callable[[Scenario], Awaitable[Any]]) -> Any:
    """A started simulator on :func:`fast_scenario` (or on ``request.param``)."""
    return await sim_factory(getattr(request, "param", None) or fast_scenario())


@pytest.fixture
def sim_config(sim: Any, tmp_path: Path) -> Path:
    """``config.toml`` for ``sim`` (token/password in mode-600 files next to it)."""
    return sim.write_config(tmp_path / "sim-config")


@pytest.fixture
def sim_thread(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A simulator running in a background thread, for synchronous tests."""
    from nfu_tui.sim.runner import SimulatorThread

    runner = SimulatorThread(getattr(request, "param", None) or fast_scenario())
    with runner:
        yield runner
