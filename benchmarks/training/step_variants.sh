# One device call, alone on the GPU (timings shared with another process are not
# trusted): the training step's switches one process each, then one table.
#
#   bash benchmarks/training/step_variants.sh
#
# tnl-385m 4 x 8K (remat projections): the loss kernels, one process each, every one
# twice in alternation (a gain is checked twice; chunked once):
# - auto (the default: grads_in_forward, the chunked loss's chunks with the gradient
#   made in the forward; 1.046x and 1.043x fused_xla_grads in 2026-12-06's sixth
#   session);
# - fused_xla_grads (the fused Pallas forward, its backward in XLA; the default before);
# - chunked (the loss differentiated by JAX).
# Measured before and not repeated here (benchmarks/RESULTS.md): scan_unroll=2
# (0.949x), remat projections_op_out (1.003x), XLA's dynamic-slice fusion (1.004x,
# 0.997x), fp8 without autotuning, model.layer_loop=python (not compiled in 150 s).
# $OUT gets step_variants.md (every table) and step_variants.tgz (the json rows, logs).
source benchmarks/common/process_runs.sh /tmp/step_variants
B="python3 -m benchmarks.training.train_bench --preset tnl-385m --archs tnl --rows 8192"
B="$B --tokens 32768 --remat projections --warmup 2 --steps 10"
for round in 1 2; do
  run auto_$round 100 $B
  run fused_xla_grads_$round 100 $B --set loss_kernel=fused_xla_grads
  [ $round = 1 ] && run chunked_$round 100 $B --set loss_kernel=chunked
done
{
  cat $work/device.txt $work/seconds.txt
  for f in $work/*/*.md; do echo; echo "## $f"; cat $f; done
} > $OUT/step_variants.md
tar czf $OUT/step_variants.tgz -C $work --exclude='*.png' .
cat $OUT/step_variants.md
