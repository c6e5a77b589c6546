"""Lightning Attention kernels: chunked causal linear attention with per-head decay."""
from pallas_kernels.lightning.ops import lightning_attention, lightning_attention_step
from pallas_kernels.lightning.validation import BACKENDS

__all__ = ["BACKENDS", "lightning_attention", "lightning_attention_step"]
