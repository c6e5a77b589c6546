"""Helpers shared by the benchmarks: argument parsing, timing, profiles, PyTorch anchors."""
