"""Lightning Attention kernels: chunked causal linear attention with per-head decay."""
from pallas_kernels.lightning.launch import KernelConfig, Launch
from pallas_kernels.lightning.ops import lightning_attention, lightning_attention_step
from pallas_kernels.lightning.partitioning import ShardAxes
from pallas_kernels.lightning.validation import BACKENDS

__all__ = ["BACKENDS", "KernelConfig", "Launch", "lightning_attention",
           "lightning_attention_step", "ShardAxes"]
