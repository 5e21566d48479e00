"""Simulated AIplayer plugins for tests, benchmarks and trying the bridge without Logic Pro (`oscbridge simulate`).

`SimulatedPlugin` behaves like one real plugin instance on the wire (bugs included); `PluginFleet` starts
several one after another.
"""

from oscbridge.tools.sim.plugin import PluginFleet, SimConfig, SimulatedPlugin, build_message, parse_like_juce

__all__ = ["PluginFleet", "SimConfig", "SimulatedPlugin", "build_message", "parse_like_juce"]
