# One device call, alone on the GPU (timings shared with another process are not
# trusted): the training step's switches one process each, then one table.
#
#   bash benchmarks/training/step_variants.sh
#
# 1. context_proxy --profile: LASP-2's order on one device's share, kernel time per case.
# 2. tnl-385m 4 x 8K (remat projections): the default step, profiled by kernel and by
#    the functions of ours that made each kernel; then loss_kernel=fused_xla_grads,
#    model.scan_unroll=2 and remat projections_op_out (the op's forward not run
#    again), each on its own.
# 3. tnl-1b 4 x 8K: bf16, then fp8 projections with XLA's autotuning off (with it on,
#    fp8's process took 258 s, nearly all compiling; 2026-12-06): seconds and tokens/s.
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
B="python3 -m benchmarks.training.train_bench --archs tnl --rows 8192 --tokens 32768"
B="$B --remat projections --warmup 2 --steps 10"
run proxy 120 python3 -m benchmarks.scaling.context_proxy --profile
run base 150 $B --preset tnl-385m --profile tnl:8192
run fused_xla_grads 100 $B --preset tnl-385m --set loss_kernel=fused_xla_grads
run unroll2 100 $B --preset tnl-385m --set model.scan_unroll=2
run op_out 100 $B --preset tnl-385m --remat projections_op_out
run 1b_bf16 100 $B --preset tnl-1b
run 1b_fp8_autotune0 200 env XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" \
  $B --preset tnl-1b --set model.projection_dtype=fp8
{
  cat $work/device.txt $work/seconds.txt
  for f in $work/*/*.md; do echo; echo "## $f"; cat $f; done
  echo; echo "## where the default step's time goes"
  sed -n '/^| our code/,/^$/p' $work/base.log
} > $OUT/step_variants.md
tar czf $OUT/step_variants.tgz -C $work --exclude='*.png' .
cat $OUT/step_variants.md
