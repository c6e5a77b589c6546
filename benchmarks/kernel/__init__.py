"""Kernel benchmarks: correctness on the GPU, speed against FLA and cuDNN, launch tuning."""
