# Issue 28's fp8 figure on one GPU (tnl-1b: fp8 projections >= 1.3x bf16's tokens/s,
# final loss within 1% of bf16's after 1,000 steps), one device call per part:
#
#   PART=loss bash benchmarks/training/fp8_check.sh    # about 400 s
#   PART=speed bash benchmarks/training/fp8_check.sh   # about 450 s
#
# - loss: tnl-1b trained 1,000 steps from the same seed on the same data (the stdlib
#   corpus, bytes, 4 x 2K rows a step, warmup 100, lr 3e-4), once in bf16 and once with
#   model.projection_dtype=fp8 (delayed scaling), the two processes side by side (their
#   speeds are not compared here), then compare_runs: the final training loss (mean
#   of the last 50 steps), the held-out losses, both curves in compare_runs.png.
# - speed: train_bench tnl-1b 4 x 8K (remat projections), bf16, fp8, bf16 again, each
#   process alone (fp8's compile autotunes its products: about 4 minutes).
# $OUT gets fp8_check.md (the tables and the logs' ends), and for loss the two runs'
# metrics.jsonl and compare_runs.png.
case "$PART" in
  loss|speed) ;;
  *) echo "PART=$PART: expected loss or speed" >&2; exit 2 ;;
esac
rm -rf /tmp/fp8_check  # A warm machine may hold an earlier call's runs.
source benchmarks/common/process_runs.sh /tmp/fp8_check
if [ "$PART" = loss ]; then
  export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
  T="python3 train.py --config tnl-1b steps=1000 batch_size=4 seq_len=2048 warmup=100"
  T="$T lr=3e-4 eval_every=250 log_every=10 checkpoint_every=1000 keep_checkpoints=1"
  T="$T sample_tokens=0"
  timeout 540 $T run_dir=$work/bf16 > $work/bf16.log 2>&1 &
  timeout 540 $T model.projection_dtype=fp8 run_dir=$work/fp8 > $work/fp8.log 2>&1 &
  wait
  python3 -m benchmarks.training.compare_runs $work/bf16 $work/fp8 --out $OUT \
    > $work/compare_runs.md 2>&1
  for run in bf16 fp8; do cp $work/$run/metrics.jsonl $OUT/metrics_$run.jsonl; done
else
  B="python3 -m benchmarks.training.train_bench --preset tnl-1b --archs tnl --rows 8192"
  B="$B --tokens 32768 --remat projections --warmup 2 --steps 10"
  run bf16_1 150 $B
  run fp8 330 $B --set model.projection_dtype=fp8
  run bf16_2 150 $B
fi
{
  cat $work/device.txt $work/seconds.txt 2>/dev/null
  for f in $work/*.md $work/*/*.md; do [ -f $f ] && { echo; echo "## $f"; cat $f; }; done
  for f in $work/*.log; do echo; echo "## $f"; tail -n 30 $f; done
} > $OUT/fp8_check.md
for f in $work/*.md $work/*/train_bench.md; do [ -f $f ] && cat $f; done
