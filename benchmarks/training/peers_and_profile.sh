# One device call, alone on the GPU: the training step beside FLA's models, then the
# default step profiled with every kernel named by the code of ours that made it.
#
#   bash benchmarks/training/peers_and_profile.sh
#
# 1. tnl-385m, 32K tokens per step at 2K, 8K and 32K rows: TNL and the TNL-backbone softmax
#    beside FLA 0.6.0's RetNet and Transformer (train_bench --anchor fla: FLA's fused
#    modules, torch.compile, bf16 autocast; each anchor row says what it ran with).
# 2. tnl-1b at 4 x 8K, TNL beside FLA's RetNet and Transformer at its shape.
# 3. tnl-385m 4 x 8K (the default step: loss_kernel=auto, grads_in_forward)
#    profiled with XLA's command buffers off: inside a command buffer the profile names
#    the buffer, not the instruction, so cuBLAS's and Mosaic's kernels (half the step)
#    could not be put to a function of ours (hlo_sources). Its tokens/s is the
#    profiled process's own (launches not batched), not the default's.
# $OUT gets peers_and_profile.md (every table) and peers_and_profile.tgz (json rows, logs).
for switch in PEERS_385M PEERS_1B PROFILE; do  # Each 1 (the default) or 0.
  case "${!switch:-1}" in 0|1) ;; *) echo "$switch=${!switch}: expected 0 or 1" >&2; exit 2;; esac
done
source benchmarks/common/process_runs.sh /tmp/peers_and_profile
B="python3 -m benchmarks.training.train_bench --tokens 32768 --remat projections"
# About 480 s for part 1 (FLA's six rows take about 290 s of it), 170 s for part 2 and
# 120 s for part 3: more than one call's 600 s, so run it as two calls on one warm
# machine, `PEERS_1B=0 PROFILE=0 bash ...` then `PEERS_385M=0 bash ...`.
[ "${PEERS_385M:-1}" = 1 ] && run peers_385m 540 $B --preset tnl-385m --archs tnl,softmax \
  --rows 2048,8192,32768 --anchor fla
[ "${PEERS_1B:-1}" = 1 ] && run peers_1b 170 $B --preset tnl-1b --archs tnl --rows 8192 --anchor fla
[ "${PROFILE:-1}" = 1 ] || SKIP_PROFILE=1
NO_BUFFERS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer="
[ -z "$SKIP_PROFILE" ] && run profile_named 120 env XLA_FLAGS="$NO_BUFFERS" $B --preset tnl-385m --archs tnl \
  --rows 8192 --warmup 2 --steps 5 --profile tnl:8192
{
  cat $work/device.txt $work/seconds.txt
  for f in $work/*/*.md; do echo; echo "## $f"; cat $f; done
  echo; echo "## where the default step's time goes (command buffers off)"
  sed -n '/^| our code/,/^$/p' $work/profile_named.log 2>/dev/null
} > $OUT/peers_and_profile.md
tar czf $OUT/peers_and_profile.tgz -C $work --exclude='*.png' .
cat $OUT/peers_and_profile.md
