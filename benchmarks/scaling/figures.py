"""The stated and measured numbers the scaling model starts from, each with its source.

Stated (vendor data sheets; per GPU, one direction):

| link | GB/s | source |
|---|---|---|
| NVLink 4 within a host of 8 (H100 SXM, H200 SXM) | 450 | NVIDIA H100 and H200 data sheets: "NVLink 900 GB/s" (both directions) |
| network between hosts, 400 Gb/s InfiniBand NDR per GPU | 50 | NVIDIA DGX H100 / DGX H200 user guides: 8 x ConnectX-7 400 Gb/s, one per GPU |
| bf16 dense peak (H100 SXM, H200 SXM) | 989 TFLOP/s | data sheets (``training.metrics``) |
| memory (H100 SXM / H200) | 80 / 141 GB | data sheets |

Measured (benchmarks/RESULTS.md; one or two H200s, jax 0.11.2, bf16 compute, float32
parameters and AdamW): see ``MEASURED_*`` below, each row naming its section.
"""
from __future__ import annotations

NVLINK_BYTES_PER_S = 450e9
NETWORK_BYTES_PER_S = 50e9
GPUS_PER_HOST = 8
PEAK_FLOPS = 989e12
MEMORY_GB = {"H100": 80e9, "H200": 141e9}

# 1-GPU MFU, by GPU and (preset, remat), at 4 x 8K (32K tokens per step, remat
# `projections`). H200: RESULTS.md "2026-12-01, second session ... (issue 18)", the
# paper's-table rows; H100: "2026-12-06, third session" (tnl-1b) and the FLA peer's
# second call (tnl-385m). The same bf16 peak; the H200's faster memory speeds the
# elementwise work.
MEASURED_MFU = {
    "H200": {("tnl-1b", "projections"): 0.478, ("tnl-385m", "projections"): 0.385},
    "H100": {("tnl-1b", "projections"): 0.448, ("tnl-385m", "projections"): 0.341},
}

# RESULTS.md "2026-12-01: the op over a mesh ... (issue 17)", "Two H200s, one call":
# tnl-385m, the chunked loss, remat none, tokens/s (median of steps 4-10).
# (id, GPUs, rows, row length, mesh (data, fsdp, context, tensor), tokens/s)
MEASURED_TWO_GPU = [
    ("1 GPU 4x8K", 1, 4, 8192, (1, 1, 1, 1), 140.3e3),
    ("DP=2 8x8K", 2, 8, 8192, (2, 1, 1, 1), 263.7e3),
    ("FSDP=2 8x8K", 2, 8, 8192, (1, 2, 1, 1), 262.8e3),
    ("TP=2 4x8K", 2, 4, 8192, (1, 1, 1, 2), 215.6e3),
    ("1 GPU 1x64K", 1, 1, 65536, (1, 1, 1, 1), 145.0e3),
    ("CP=2 1x64K", 2, 1, 65536, (1, 1, 2, 1), 257.9e3),
    ("CP=2 1x128K", 2, 1, 131072, (1, 1, 2, 1), 270.3e3),
]
# Which 1-GPU row sets the efficiency of each row (the same row length, or the longest
# measured: 1 x 128K did not fit one GPU).
ONE_GPU_BASE = {8192: "1 GPU 4x8K", 65536: "1 GPU 1x64K", 131072: "1 GPU 1x64K"}

# The sequence-split op alone (same section, scaling_x2_op.json): fwd+bwd of (1, 128K)
# over 2 GPUs against one device's share (1, 64K), bf16, 16 heads, d 128.
OP_SHARE_MS = 1.247          # (1, 65536, 16, 128): one device's share
OP_SPLIT_X_SHARE = 2.008     # the split op's time / the share's (Auto mode), the
# order before LASP-2's: the model's ratio until LASP-2's order is measured on two GPUs
OP_SHARE_HEAD_TOKENS = 65536 * 16


# Training memory (RESULTS.md issue 18 sections: "Remat policies at 4 x 8K" and the
# paper's-table rows; compiled step's arguments + temporaries, GiB), at 32K tokens.
# (preset, remat, tokens per device, GiB)
MEASURED_MEMORY = [
    ("tnl-385m", "none", 32768, 50.6),
    ("tnl-385m", "op_io", 32768, 15.9),
    ("tnl-385m", "projections", 32768, 22.9),
    ("tnl-1b", "projections", 32768, 39.1),
]
