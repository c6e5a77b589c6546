# Sourced by the device scripts that time one process at a time, alone on the GPU:
#   source benchmarks/common/process_runs.sh WORK_DIR
# sets up the device (device_setup.sh), makes WORK_DIR ($work) with the GPU's name in
# device.txt, and defines
#   run NAME TIMEOUT ARGS...   one process (ARGS, given --out $work/NAME), its log in
#                              $work/NAME.log and its exit and seconds in seconds.txt.
work=$1
source benchmarks/common/device_setup.sh
mkdir -p $work
nvidia-smi --query-gpu=name --format=csv,noheader | tee $work/device.txt
run() {
  local name=$1 limit=$2
  shift 2
  local start=$(date +%s)
  timeout $limit "$@" --out $work/$name > $work/$name.log 2>&1
  echo "$name: exit $? after $(( $(date +%s) - start )) s" | tee -a $work/seconds.txt
}
