"""The tools around the daemon: each imported only when its command (or a test, or a benchmark) runs.

`oscbridge serve` imports none of them (tests/test_cli.py checks). The simulator and the fake Ollama are also what
the tests and the benchmarks drive the bridge with; `ports` and `bridge_process` are their shared helpers.
"""
