"""Benchmark harness comparing marserve with TorchServe 0.12 (not tests; run ``make bench``)."""
