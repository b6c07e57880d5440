# Sourced by the GPU scripts (after PYTHONPATH, CC and CXX are set; needs OUT): `gpu_build` puts the CUDA
# and CPU extensions into openrec/, from .prebuilt/ when its stamp matches this tree and this torch
# (scripts/prebuilt_ext.py; made by `PREBUILT_PYTHON=... scripts/prepare_gpu_carry.sh`, carried as .prebuilt),
# else compiled here (~70 s of device time on a lent machine). PREBUILT=0: always compile.
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
gpu_build() {
  local start
  start=$(date +%s)
  if [ "${PREBUILT:-1}" = 1 ] && [ -f .prebuilt/ext.tar.xz ]; then
    if python3 scripts/prebuilt_ext.py install .prebuilt \
        && python3 -c "import sys, openrec.ops as o; sys.exit(0 if o.cuda_kernels_available() else 1)"; then
      echo "build: prebuilt extensions ($(( $(date +%s) - start )) s)"
      return 0
    fi
    rm -f openrec/_C*.so  # a stamp that matched but a library that did not load: compile instead
  fi
  OPENREC_CUDA=1 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; return 1; }
  echo "build: $(( $(date +%s) - start )) s"
}
