"""`make bench`: throughput, latency and memory figures for rapidloop, and where the time goes.

Figures about speed come from here, never from timed assertions in tests: a
test that fails when the machine is busy teaches nothing, while a benchmark
that runs a plain-Python baseline next to the job in the same run gives a
ratio that survives a noisy machine. ``python -m bench.run`` is the entry
point; the method is described in the README's "Performance" section.
"""
