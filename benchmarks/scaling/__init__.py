"""Scaling over the GPUs of one host: the sharded op and training layouts."""
