/*
 * Internal to conv.c: the pointwise (1x1, no padding) convolution kernels, register-blocked.
 *
 * Each result is summed in the order of conv.c's general loops (forward: bias, then input
 * channels ascending; input gradient: output channels ascending onto the existing dx; weight
 * gradient: pixels ascending onto the existing gradient), every product and sum rounded once,
 * so the results are bit-identical to the general loops; only the accumulators live in
 * registers, blocks of 4 x 4, instead of memory.
 */
#ifndef MDY_CONV_POINTWISE_H
#define MDY_CONV_POINTWISE_H

#include <stdint.h>

#include "conv.h"

/*
 * The whole-layer entry points for a pointwise shape (1x1, stride 1, no padding, out = in;
 * conv.c's is_pointwise) with float weights: mdy_conv2d_forward, and mdy_conv2d_backward_input
 * onto dx (after conv.c has zeroed it when not accumulating), group by group.
 */
void mdy_conv_pointwise_forward(const mdy_conv_shape_t *s, const float *x, const float *w,
                                const float *b, float *y);
void mdy_conv_pointwise_backward_input(const mdy_conv_shape_t *s, const float *dy,
                                       const float *w, float *dx);

/*
 * mdy_conv2d_backward_weight_channel for a 1x1 kernel without padding whose every output pixel
 * reads inside the input (any stride); returns 0, doing nothing, for any other shape.
 */
int mdy_conv_pointwise_backward_weight(const mdy_conv_shape_t *s, const float *dy,
                                       const float *x_channel, uint16_t c, float *grad_slice);

/*
 * mdy_conv2d_backward_weight_channels (conv.h) for the shapes above; returns 0, doing nothing,
 * for any other shape.
 */
int mdy_conv_pointwise_backward_weights(const mdy_conv_shape_t *s, const float *dy, uint32_t n,
                                        const uint16_t *channels, uint32_t first_channel,
                                        float *pool, const uint32_t *offsets,
                                        uint32_t x_offset);

/*
 * y[o][p] = b[o] + sum_ic w[o][ic] x[ic][p] for o < n_out, p < hw: x is cpg x hw, w is
 * n_out x cpg, b n_out floats or NULL (no bias), y n_out x hw (not overlapping x).
 */
void mdy_pointwise_forward(int32_t n_out, int32_t cpg, int32_t hw, const float *x,
                           const float *w, const float *b, float *y);

/*
 * dx[ic][p] += sum_o dy[o][p] w[o][ic], o ascending: dy is n_out x hw, w n_out x cpg, dx
 * cpg x hw (accumulated into; not overlapping dy).
 */
void mdy_pointwise_backward_input(int32_t n_out, int32_t cpg, int32_t hw, const float *dy,
                                  const float *w, float *dx);

/*
 * g[m] += sum_p dy[m][p] x[p], output pixels p = (oy, ox) in row-major order, for m < n_out:
 * dy is n_out x out_h x out_w and output pixel (oy, ox) reads x[oy * row_step + ox * col_step]
 * (row_step = stride_h * in_w, col_step = stride_w).
 */
void mdy_pointwise_backward_weight(int32_t n_out, int32_t out_h, int32_t out_w,
                                   const float *dy, const float *x, int32_t row_step,
                                   int32_t col_step, float *g);

#endif /* MDY_CONV_POINTWISE_H */
