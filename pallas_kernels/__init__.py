"""Lightning Attention kernels: chunked causal linear attention with per-head decay."""
from pallas_kernels.lightning.ops import lightning_attention, lightning_attention_step

__all__ = ["lightning_attention", "lightning_attention_step"]
