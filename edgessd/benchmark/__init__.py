"""The benchmark suite behind ``edgessd bench``: every method on the same prompts, one report.

- ``methods.py``: how each in-process method (plain, lookup, static, swift, knn, planner,
  auto) generates on one Engine.
- ``peers.py``: other runtimes in their own processes (llama.cpp plain and n-gram modes,
  draft-model speculation, llama-cpp-python's prompt lookup); ``lcp_worker.py`` is the
  llama-cpp-python child process.
- ``power.py``: board power from tegrastats, where it exists.
- ``suite.py``: the run (order, repeats, identity against plain, rows).
- ``report.py``: the markdown table, the JSON rows, the PNG plot.
"""
