"""Simulated AIplayer plugins for tests, benchmarks and trying the bridge without Logic Pro.

`SimulatedPlugin` behaves like one real plugin instance on the wire (bugs included); `PluginFleet` starts
several one after another; `main` is the command line (`python -m oscbridge.sim`, later `oscbridge simulate`).
"""

from oscbridge.sim.cli import main
from oscbridge.sim.plugin import PluginFleet, SimConfig, SimulatedPlugin, build_message, parse_like_juce

__all__ = ["PluginFleet", "SimConfig", "SimulatedPlugin", "build_message", "main", "parse_like_juce"]
