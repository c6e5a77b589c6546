"""The lightning-attention op: references, Pallas kernels, custom VJP, decode step."""
