"""The lightning-attention op: public op and validation (ops, validation), the ``xla``
backend (xla_backend), the Pallas kernels (kernel_vjp, passes, splits, tuning, triton/,
mosaic/) and the test oracles (reference)."""
