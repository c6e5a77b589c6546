# One device call, alone on the GPU (timings shared with another process are not
# trusted): the training step's switches one process each, then one table.
#
#   VARIANTS=norm bash benchmarks/training/step_variants.sh         # about 400 s
#   ROUNDS=1 VARIANTS=norm bash benchmarks/training/step_variants.sh  # about 260 s
#   ROUNDS=1 VARIANTS=xla_flags bash benchmarks/training/step_variants.sh  # about 170 s
#   PRESET=tnl-1b ROUNDS=1 VARIANTS=norm bash benchmarks/training/step_variants.sh
#
# PRESET (tnl-385m, the default, or tnl-1b: width 2048, where the fused norms win more
# alone) 4 x 8K (remat projections), against the default step in the same call:
# - norm: model.norm_kernel=pallas, the SRMSNorms and the output's norm-and-gate in
#   fused Pallas kernels (pallas_kernels/norms), each ROUNDS times (default 2) in
#   alternation with the default (a gain is checked twice), after glue_check's
#   kernel-level rows.
# - xla_flags: XLA's own switches for one GPU, each ROUNDS times in alternation with the
#   default, each process with its XLA_FLAGS: cuBLAS for every product
#   (--xla_gpu_enable_triton_gemm=false; decoding's 1.08-1.12x from 8 rows, 2026-12-01),
#   no CUDA graphs (--xla_gpu_enable_command_buffer=), the latency-hiding scheduler.
# Measured before (benchmarks/RESULTS.md): the loss kernels (sixth and seventh
# sessions), scan_unroll=2 (0.949x), remat projections_op_out (1.003x), XLA's
# dynamic-slice fusion (1.004x, 0.997x), fp8 without autotuning, the fused norms
# (1.001x, eleventh session), model.mlp_product=stacked, the MLP's x W1 and x W2 as
# one product (0.983x twice, twelfth session; removed since), model.layer_loop=python,
# the layers one by one without the scan's stacked buffers (0.985x, a 170 s longer
# compile, twelfth session; removed since), XLA's switches above (cuBLAS 0.936x, no
# CUDA graphs 0.989x, the latency-hiding scheduler 0.995x, twelfth session).
# $OUT gets step_variants.md (every table) and step_variants.tgz (the json rows, logs).
case "$VARIANTS" in
  norm|xla_flags) ;;
  *) echo "VARIANTS=$VARIANTS: expected norm or xla_flags" >&2; exit 2 ;;
esac
case "${PRESET:=tnl-385m}" in
  tnl-385m) T=100 ;;
  tnl-1b) T=150 ;;  # A longer compile and step.
  *) echo "PRESET=$PRESET: expected tnl-385m or tnl-1b" >&2; exit 2 ;;
esac
case "${ROUNDS:=2}" in
  1|2|3) ;;
  *) echo "ROUNDS=$ROUNDS: expected 1, 2 or 3" >&2; exit 2 ;;
esac
rm -rf /tmp/step_variants  # A warm machine may hold an earlier call's rows.
source benchmarks/common/process_runs.sh /tmp/step_variants
B="python3 -m benchmarks.training.train_bench --preset $PRESET --archs tnl --rows 8192"
B="$B --tokens 32768 --remat projections --warmup 2 --steps 10"
if [ "$VARIANTS" = xla_flags ]; then
  for round in $(seq $ROUNDS); do
    run default_$round $T $B
    for variant in "cublas_gemms --xla_gpu_enable_triton_gemm=false" \
                   "no_command_buffers --xla_gpu_enable_command_buffer=" \
                   "latency_hiding --xla_gpu_enable_latency_hiding_scheduler=true"; do
      set -- $variant  # name, flag
      run ${1}_$round $T env XLA_FLAGS="${XLA_FLAGS:-} $2" $B
    done
  done
else
  run glue_norm 120 python3 -m benchmarks.training.glue_check --only norm_kernel
  for round in $(seq $ROUNDS); do
    run default_$round $T $B
    run norm_pallas_$round $T $B --set model.norm_kernel=pallas
  done
fi
{
  cat $work/device.txt $work/seconds.txt
  for f in $work/*/*.md; do echo; echo "## $f"; cat $f; done  # Tables whole,
  for f in $work/*.log; do echo; echo "## $f"; tail -n 40 $f; done  # logs' ends.
} > $OUT/step_variants.md
tar czf $OUT/step_variants.tgz -C $work --exclude='*.png' .
cat $work/seconds.txt; for f in $work/*/*.md; do cat $f; done
