// Minimal reproducer of a ptxas miscompile in CUDA 13.0 (V13.0.88) for sm_90, found 2026-11-24
// (docs/perf_notes.md, note 20). For n = max(0, min(2, x)), the test `n == 2` comes out wrong.
// The PTX is right (min, max, setp.eq). ptxas folds the clamp into one VIMNMX.RELU and takes
// `n == 2` from that instruction's predicate output, which does not mean "n == 2".
//   nvcc -arch=sm_90 -O3 -o /tmp/repro scripts/nvcc_clamp_compare_repro.cu && /tmp/repro
// On an H100 with CUDA 13.0, n is right for every x, but `n == 2` is 1 for x = 0, 1, 2 and 0 for
// x = 3, 4, 100, so the program prints MISCOMPILED. Workaround: test the unclamped value (x >= 2).
// The shipped kernels do not hit it: `cuobjdump -sass` of csrc/*.cu for sm_90 has no VIMNMX.
#include <cstdio>
__global__ void k(const int* x, int* n_out, int* eq_out) {
  const int i = threadIdx.x;
  const int n = max(0, min(2, x[i]));
  n_out[i] = n;
  eq_out[i] = n == 2;
}
int main() {
  const int N = 8;
  int hx[N] = {-3, -1, 0, 1, 2, 3, 4, 100}, *dx, *dn, *de, hn[N], he[N];
  cudaMalloc(&dx, sizeof hx); cudaMalloc(&dn, sizeof hx); cudaMalloc(&de, sizeof hx);
  cudaMemcpy(dx, hx, sizeof hx, cudaMemcpyHostToDevice);
  k<<<1, N>>>(dx, dn, de);
  cudaMemcpy(hn, dn, sizeof hx, cudaMemcpyDeviceToHost); cudaMemcpy(he, de, sizeof hx, cudaMemcpyDeviceToHost);
  int bad = 0;
  for (int i = 0; i < N; ++i) {
    const int n = hx[i] < 0 ? 0 : (hx[i] > 2 ? 2 : hx[i]);
    printf("x=%4d n=%d (want %d) n==2: %d (want %d)\n", hx[i], hn[i], n, he[i], n == 2);
    bad += hn[i] != n || he[i] != (n == 2);
  }
  printf(bad ? "MISCOMPILED\n" : "ok\n");
  return bad ? 1 : 0;
}
