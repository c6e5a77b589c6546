"""Training benchmarks: step time and MFU by row length, peak memory by remat policy."""
