/*
 * Fully connected layer (the classifier): forward, error propagation and weight/bias gradient.
 *
 * Layouts (float32, one sample): x is in_f, y is out_f, w is out_f x in_f row-major
 * (PyTorch nn.Linear / ONNX Gemm with transB = 1), b is out_f.
 */
#ifndef MDY_LINEAR_H
#define MDY_LINEAR_H

#include <stdint.h>

/* y[o] = b[o] + sum_i w[o][i] * x[i].  b may be NULL (no bias). y must not overlap x. */
void mdy_linear_forward(uint16_t in_f, uint16_t out_f, const float *x, const float *w,
                        const float *b, float *y);

/* dx[i] = sum_o w[o][i] * dy[o].  accumulate = 0 overwrites dx, 1 adds into it.
   dx must not overlap dy. */
void mdy_linear_backward_input(uint16_t in_f, uint16_t out_f, const float *dy, const float *w,
                               float *dx, int accumulate);

/* gw[o][i] += dy[o] * x[i] ; gb[o] += dy[o] (gb may be NULL). Always accumulates (the
   gradients sum over the samples of a mini-batch; clear them with mdy_zero). */
void mdy_linear_backward_weight(uint16_t in_f, uint16_t out_f, const float *dy, const float *x,
                                float *gw, float *gb);

#endif /* MDY_LINEAR_H */
