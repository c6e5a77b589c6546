# One device call, alone on the GPU (timings shared with another process are not
# trusted): the training step's switches one process each, then one table.
#
#   bash benchmarks/training/step_variants.sh
#
# tnl-385m 4 x 8K (remat projections): the loss kernels, one process each, every one
# twice in alternation (a gain is checked twice; chunked once, its gap to auto being
# measured twice before):
# - auto (the default: fused_xla_grads on one GPU, 1.029x and 1.034x twice the chunked
#   loss's step in 2026-12-06's fourth and fifth sessions);
# - grads_in_forward (the chunked loss with its gradient made in the forward: one head
#   matmul per token fewer, any mesh; not yet measured);
# - chunked (the loss before auto; what a mesh of several devices runs);
# - model.layer_loop=python (the layers one by one: no stacked buffers of the saved
#   projections, which the scan zeroes (6.2 ms) and copies into (9.6 ms) each step;
#   on the CPU its program's temporaries were 17% larger).
# Measured before and not repeated here (benchmarks/RESULTS.md): scan_unroll=2
# (0.949x), remat projections_op_out (1.003x), XLA's dynamic-slice fusion (1.004x,
# 0.997x), fp8 without autotuning.
# $OUT gets step_variants.md (every table) and step_variants.tgz (the json rows, logs).
source benchmarks/common/process_runs.sh /tmp/step_variants
B="python3 -m benchmarks.training.train_bench --preset tnl-385m --archs tnl --rows 8192"
B="$B --tokens 32768 --remat projections --warmup 2 --steps 10"
for round in 1 2; do
  run auto_$round 100 $B
  run grads_in_forward_$round 100 $B --set loss_kernel=grads_in_forward
  [ $round = 1 ] && run chunked_$round 100 $B --set loss_kernel=chunked
  run python_loop_$round 150 $B --set model.layer_loop=python
done
{
  cat $work/device.txt $work/seconds.txt
  for f in $work/*/*.md; do echo; echo "## $f"; cat $f; done
} > $OUT/step_variants.md
tar czf $OUT/step_variants.tgz -C $work --exclude='*.png' .
cat $OUT/step_variants.md
