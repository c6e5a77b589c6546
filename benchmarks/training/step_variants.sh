# One device call, alone on the GPU (timings shared with another process are not
# trusted): the training step's switches one process each, then one table.
#
#   bash benchmarks/training/step_variants.sh
#
# tnl-385m 4 x 8K (remat projections): the default step profiled by kernel and by the
# functions of ours that made each kernel (hlo_sources); then each switch still open,
# every one twice, in alternation with the default (a gain is checked twice):
# - loss_kernel=fused_xla_grads: 1.029x in one call (2026-12-06, fourth session), 1.034x
#   twice in the fifth, now the default on one GPU (loss_kernel=auto);
# - XLA's dynamic-slice fusion (cuBLAS products read and write slices of the layer
#   scan's stacked buffers in place): the 4 per-layer copies of the saved projections
#   took 9.6 ms of a 234 ms step. No gain in the fifth session (1.004x, 0.997x).
# Measured before and not repeated here (benchmarks/RESULTS.md, fourth session):
# scan_unroll=2 (0.949x), remat projections_op_out (1.003x), fp8 without autotuning.
# $OUT gets step_variants.md (every table) and step_variants.tgz (the json rows, logs).
source benchmarks/common/device_setup.sh
work=/tmp/step_variants
mkdir -p $work
nvidia-smi --query-gpu=name --format=csv,noheader | tee $work/device.txt
run() {  # run NAME TIMEOUT ARGS...: one process, its seconds and its table kept.
  local name=$1 limit=$2
  shift 2
  local start=$(date +%s)
  timeout $limit "$@" --out $work/$name > $work/$name.log 2>&1
  echo "$name: exit $? after $(( $(date +%s) - start )) s" | tee -a $work/seconds.txt
}
B="python3 -m benchmarks.training.train_bench --preset tnl-385m --archs tnl --rows 8192"
B="$B --tokens 32768 --remat projections --warmup 2 --steps 10"
DSF="${XLA_FLAGS:-} --xla_gpu_enable_dynamic_slice_fusion=true"
run default_profiled 150 $B --profile tnl:8192
for round in 1 2; do
  run fused_xla_grads_$round 100 $B --set loss_kernel=fused_xla_grads
  run dynamic_slice_fusion_$round 100 env XLA_FLAGS="$DSF" $B
  run default_$round 100 $B
done
run both 100 env XLA_FLAGS="$DSF" $B --set loss_kernel=fused_xla_grads
{
  cat $work/device.txt $work/seconds.txt
  for f in $work/*/*.md; do echo; echo "## $f"; cat $f; done
  echo; echo "## where the default step's time goes"
  sed -n '/^| our code/,/^$/p' $work/default_profiled.log
} > $OUT/step_variants.md
tar czf $OUT/step_variants.tgz -C $work --exclude='*.png' .
cat $OUT/step_variants.md
