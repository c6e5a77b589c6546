# Sourced by device commands: grain and FLA 0.6.0 (not installed on the GPU machine;
# FLA is train_bench's --anchor) from the wheels carried in .whl/, the repository on
# PYTHONPATH, NCCL without NVLink multicast.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/grain*.whl .whl/array_record*.whl .whl/portpicker*.whl \
    .whl/fla_core*.whl .whl/flash_linear*.whl 2>&1 | tail -2
export PYTHONPATH=$PWD:/tmp/site
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
