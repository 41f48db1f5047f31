/*
 * 2-D convolution: forward, error propagation (input gradient) and per-input-channel weight
 * gradient, for regular, pointwise, depthwise and grouped convolutions.
 *
 * Layouts (float32, one sample, channel-major):
 *   x  : in_c  x in_h  x in_w
 *   y  : out_c x out_h x out_w
 *   w  : out_c x (in_c / groups) x k_h x k_w
 *   b  : out_c (or NULL)
 * Output o belongs to group g = o / (out_c / groups) and reads input channels
 * g * (in_c / groups) ... (g + 1) * (in_c / groups) - 1.
 *
 * Padding: output pixel (oy, ox) reads input rows oy * stride_h - pad_top + ky, ky < k_h
 * (columns likewise). Rows/columns outside the input are zeros. The bottom/right padding is
 * implied by out_h/out_w and may be smaller or larger than pad_top/pad_left (SAME padding of
 * TensorFlow, or trailing input rows that no window reaches). Dilation is not supported.
 *
 * The shape is trusted (the compiler checks it): in_c and out_c are multiples of groups.
 */
#ifndef MDY_CONV_H
#define MDY_CONV_H

#include <stdint.h>

typedef struct {
    uint16_t in_c, in_h, in_w;      /* input  C x H x W */
    uint16_t out_c, out_h, out_w;   /* output C x H x W */
    uint8_t k_h, k_w, stride_h, stride_w;
    uint8_t pad_top, pad_left;      /* bottom/right padding follow from out_h/out_w */
    uint16_t groups;                /* 1 regular/pointwise, in_c depthwise, else grouped */
} mdy_conv_shape_t;

/*
 * y = conv(x, w) + b.  b may be NULL (no bias). y must not overlap x.
 */
void mdy_conv2d_forward(const mdy_conv_shape_t *s, const float *x, const float *w,
                        const float *b, float *y);

/*
 * dx = dL/dx from dy = dL/dy (the transposed convolution): dx is in_c x in_h x in_w,
 * dy is out_c x out_h x out_w. accumulate = 0 overwrites dx, 1 adds into it.
 * Input cells that no window reads get 0 (or keep their value when accumulating).
 */
void mdy_conv2d_backward_input(const mdy_conv_shape_t *s, const float *dy, const float *w,
                               float *dx, int accumulate);

/*
 * The same two kernels with frozen int8 weights (docs/quantization.md §5): w is out_c x
 * (in_c / groups) x k_h x k_w int8 with one float scale per output channel, w_scale (out_c).
 * Channel by channel, scratch ((in_c / groups) * k_h * k_w floats) receives the dequantized
 * filter w_scale[o] * (float)w[o][i] and the float kernel's arithmetic runs on it: the results
 * equal mdy_conv2d_forward / mdy_conv2d_backward_input on the dequantized weights bit for bit.
 * scratch must not overlap any other argument.
 */
void mdy_conv2d_forward_w8(const mdy_conv_shape_t *s, const float *x, const int8_t *w,
                           const float *w_scale, const float *b, float *y, float *scratch);

void mdy_conv2d_backward_input_w8(const mdy_conv_shape_t *s, const float *dy, const int8_t *w,
                                  const float *w_scale, float *dx, int accumulate,
                                  float *scratch);

/*
 * Weight gradient of ONE input channel c (the MeDyate unit of update):
 *   grad_slice[m][i][j] += dL/dW[o][c % (in_c / groups)][i][j],  o = g * (out_c / groups) + m,
 * for the out_c / groups output channels o of c's group g = c / (in_c / groups).
 * grad_slice is (out_c / groups) x k_h x k_w and is always accumulated into (it sums over the
 * samples of a mini-batch); x_channel is the saved in_h x in_w input map of channel c.
 */
void mdy_conv2d_backward_weight_channel(const mdy_conv_shape_t *s, const float *dy,
                                        const float *x_channel, uint16_t c, float *grad_slice);

/*
 * The weight gradients of n selected input channels in one call (the engine's, once per
 * candidate layer): for j < n, channel c = channels[j] - first_channel, whose slot at
 * pool + offsets[j] holds its grad_slice and, x_offset floats further, its x_channel. The same
 * results, bit for bit, as n calls of mdy_conv2d_backward_weight_channel in the order of j,
 * provided no slot's gradient holds -0 on entry and dy is finite (the engine's: slots start at
 * +0, a round-to-nearest sum is -0 only when both its terms are, and a step whose logits are
 * not finite stops before the backward pass); the shape's geometry is computed once per call.
 * Slots must not overlap each other or dy.
 */
void mdy_conv2d_backward_weight_channels(const mdy_conv_shape_t *s, const float *dy, uint32_t n,
                                         const uint16_t *channels, uint32_t first_channel,
                                         float *pool, const uint32_t *offsets,
                                         uint32_t x_offset);

#endif /* MDY_CONV_H */
