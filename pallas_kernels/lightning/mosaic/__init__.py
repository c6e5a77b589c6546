"""The Mosaic GPU lowering of the walks (Hopper: wgmma, TMA): every pass is one
warp-specialized kernel with operand roles (roles.py)."""
