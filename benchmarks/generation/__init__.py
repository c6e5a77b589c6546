"""Generation benchmarks: decode speed against Hugging Face Llama, with bandwidth floors."""
