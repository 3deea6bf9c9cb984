// The CPU device's element-wise, row-wise and reduction kernels (softmax, LayerNorm, GELU,
// cross-entropy and their backwards), in C so that clang vectorises them.
//
// Every function exists twice: compiled for AVX2+FMA and for the x86-64 baseline (or the
// target's baseline elsewhere); the first call picks one with __builtin_cpu_supports, so the
// library runs on any machine of its architecture and uses 8 lanes where it can.
// Reductions use fixed lane-wise partial sums combined in a fixed order: a kernel's result
// does not depend on pointer alignment, so the same inputs give the same bits in every stage
// of every pipeline (the runtime's losses are bit-identical across stage counts).
// No -ffast-math: exp is a Cephes-style polynomial written out here, accurate to ~2 ulp.
//
// Shapes are row-major; `rows` and sizes are element counts. Internal to libvpipe (hidden
// by the library's export map).
#ifndef VPIPE_KERNELS_H
#define VPIPE_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Which code path the dispatcher chose: "avx2+fma" or "baseline".
const char *vpk_isa(void);

/// Tests: 1 makes the calling thread use the baseline copies (as on a CPU without AVX2), 0
/// returns it to the CPU's choice. Other threads are not affected.
void vpk_force_baseline(int on);

/// Causal softmax in place over `blocks` square [t, t] score matrices (already scaled):
/// row i keeps columns 0...i normalised, columns above the diagonal become 0.
void vpk_softmax_causal(float *scores, long blocks, long t);

/// Softmax backward in place for the same layout: given probabilities a and their gradient
/// da, da := scale · a ⊙ (da − Σ_j a⊙da) on 0...i and 0 above the diagonal.
void vpk_softmax_causal_backward(const float *a, float *da, long blocks, long t, float scale);

/// LayerNorm over rows of c: y = (x − mean)·rstd·γ + β, rstd = 1/√(var + eps);
/// writes mean[rows], rstd[rows].
void vpk_layernorm_forward(const float *x, const float *gamma, const float *beta, float *y,
                           float *mean, float *rstd, long rows, long c, float eps);

/// LayerNorm backward: dγ += Σ dy·n, dβ += Σ dy, dx = (g − mean(g) − n·mean(g·n))·rstd,
/// n = (x − mean)·rstd, g = dy·γ. dx is overwritten.
void vpk_layernorm_backward(const float *x, const float *mean, const float *rstd, const float *gamma,
                            const float *dy, float *dx, float *dgamma, float *dbeta, long rows, long c);

/// GELU (tanh approximation, GPT-2's): y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
void vpk_gelu_forward(const float *x, float *y, long n);
/// dx = dy · GELU'(x) (overwrites dx).
void vpk_gelu_backward(const float *x, const float *dy, float *dx, long n);

/// Σ_r −log softmax(logits[r])[targets[r]] over rows of k classes (targets already checked),
/// accumulated in double.
double vpk_cross_entropy_forward(const float *logits, const int32_t *targets, long rows, long k);
/// dlogits[r] = (softmax(logits[r]) − onehot(targets[r])) · scale (overwrites dlogits).
void vpk_cross_entropy_backward(const float *logits, const int32_t *targets, float *dlogits,
                                long rows, long k, float scale);

/// acc[j] += Σ_r x[r, j] over rows of n (a bias gradient).
void vpk_column_sum_add(const float *x, float *acc, long rows, long n);
/// a[i] += b[i].
void vpk_add(float *a, const float *b, long n);

#ifdef __cplusplus
}
#endif
#endif
