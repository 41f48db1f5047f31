/*
 * Fully connected layer (the classifier; a frozen Linear with int8 weights, *_w8): forward,
 * error propagation and weight/bias gradient.
 *
 * Layouts (float32, one sample): x is in_f, y is out_f, w is out_f x in_f row-major
 * (PyTorch nn.Linear / ONNX Gemm with transB = 1), b is out_f.
 *
 * Register-blocked (linear.c), each sum in the plain loops' order, so the results are those of
 * the row-by-row loops bit for bit (tests/test_kernels_linear.py).
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

/* The same two kernels with frozen int8 weights (docs/quantization.md §5): w is out_f x in_f
   int8 with one float scale per output row, w_scale (out_f). Row by row, scratch (in_f floats)
   receives the dequantized row w_scale[o] * (float)w[o][i] and the float kernel's arithmetic
   runs on it: the results equal mdy_linear_forward / mdy_linear_backward_input on the
   dequantized weights bit for bit. scratch must not overlap any other argument. */
void mdy_linear_forward_w8(uint16_t in_f, uint16_t out_f, const float *x, const int8_t *w,
                           const float *w_scale, const float *b, float *y, float *scratch);

void mdy_linear_backward_input_w8(uint16_t in_f, uint16_t out_f, const float *dy,
                                  const int8_t *w, const float *w_scale, float *dx,
                                  int accumulate, float *scratch);

/* gw[o][i] += dy[o] * x[i] ; gb[o] += dy[o] (gb may be NULL). Always accumulates (the
   gradients sum over the samples of a mini-batch; clear them with mdy_zero). gw and gb must not
   overlap x or dy. */
void mdy_linear_backward_weight(uint16_t in_f, uint16_t out_f, const float *dy, const float *x,
                                float *gw, float *gb);

#endif /* MDY_LINEAR_H */
