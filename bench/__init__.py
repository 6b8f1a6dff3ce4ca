"""Benchmarks: scripts that print JSON and a table (``bench_e2e.py``, ``bench_replay.py``, ``baselines.py``).

Speed is measured here, never asserted in tests.
"""
