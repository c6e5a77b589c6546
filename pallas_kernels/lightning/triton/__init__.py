"""The Triton lowering of the walks: one Pallas kernel per pass, any CUDA GPU."""
