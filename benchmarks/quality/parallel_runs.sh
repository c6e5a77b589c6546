# One device call of the quality study: one process per list of runs, side by side on
# one GPU, then the results (no checkpoints) as $OUT/quality.tgz and the logs.
#
#   bash benchmarks/quality/parallel_runs.sh PHASES MEM_FRACTION RUNS [RUNS ...]
#
# PHASES as quality_study's --phases; each RUNS is an --only list (comma-separated parts
# of run names, e.g. main-tnl-lr0.002-s1,main-hybrid8-lr0.002-s1); MEM_FRACTION is each
# process's share of the GPU's memory (XLA_PYTHON_CLIENT_MEM_FRACTION; the shares must
# sum below 1). BUDGET (seconds, default 480): no run starts that its architecture's
# finished runs say would not end inside it, and at BUDGET the running one stops (a
# run cut there is lost: its checkpoint stays on the machine). Every
# main and ext run uses model.remat=projections (the same numbers, less memory).
# Extract with: tar xzf quality.tgz -C benchmarks/results/quality, then gzip the new
# metrics.jsonl and quality.json files and run quality_study --report.
source benchmarks/common/device_setup.sh
export XLA_PYTHON_CLIENT_PREALLOCATE=false
phases=$1 fraction=$2
shift 2
mkdir -p $OUT/logs
i=0
for runs in "$@"; do
  i=$((i + 1))
  XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction python3 -m benchmarks.quality.quality_study \
    --phases $phases --only $runs --budget-seconds ${BUDGET:-480} \
    --set model.remat=projections > $OUT/logs/runs-$i.log 2>&1 &
done
wait
nvidia-smi --query-gpu=name --format=csv,noheader
tar czf $OUT/quality.tgz --exclude=checkpoints --exclude=.jax-cache -C benchmarks/results/quality .
grep -h "^== \|budget spent" $OUT/logs/*.log
tar czf $OUT/logs.tgz -C $OUT logs && rm -r $OUT/logs
