/*
 * 3x3 convolutions (any stride, padding, groups) split into the interior of each output map,
 * where every tap lies inside the input, and its border (internal to conv.c: its general
 * loops call these first).
 *
 * The interior runs without bounds, in blocks of pixels, with the nine weights (or the nine
 * gradient accumulators) in registers; the border takes each pixel's taps inside the input
 * through a mask. Both keep the general kernels' operations and summation order (forward:
 * bias, input channel, ky, kx; input error: the scatter in raster order of the output pixels;
 * weight gradient: per tap, the output pixels in raster order from the existing value), so
 * the results equal the general loops of conv.c bit for bit.
 *
 * Each function returns 1 when it computed its output channel (or, for the depthwise entries,
 * its whole layer; a 3x3 kernel) and 0, touching nothing, otherwise. Built with MDY_CONV_WINDOW_OFF they always return 0: the reference build
 * of the tests, which runs the general loops only.
 */
#ifndef MDY_CONV_WINDOW_H
#define MDY_CONV_WINDOW_H

#include "conv.h"

/* y_o (out_h x out_w) = bias + conv(x_g, w_o): x_g the group's cpg input maps, w_o the output
   channel's cpg x 3 x 3 filter. */
int mdy_conv3x3_forward(const mdy_conv_shape_t *s, const float *x_g, const float *w_o,
                        float bias, float *y_o);

/* dx_g (the group's cpg input maps) += the scatter of one output channel's error dy_o along
   its filter w_o. */
int mdy_conv3x3_backward_input(const mdy_conv_shape_t *s, const float *dy_o, const float *w_o,
                               float *dx_g);

/* g_out (3 x 3) += the weight gradient of one output channel's error dy_o and input map x_c. */
int mdy_conv3x3_backward_weight(const mdy_conv_shape_t *s, const float *dy_o,
                                const float *x_c, float *g_out);

/* A whole depthwise layer (groups == in_c == out_c) of 3x3 float weights, the maps'
   geometry computed once for all channels: the same results as mdy_conv3x3_forward and
   mdy_conv3x3_backward_input channel by channel. b may be NULL (no bias). */
int mdy_conv3x3_depthwise_forward(const mdy_conv_shape_t *s, const float *x, const float *w,
                                  const float *b, float *y);

/* dx += the scatter of every channel's error dy along its filter (a whole depthwise layer). */
int mdy_conv3x3_depthwise_backward_input(const mdy_conv_shape_t *s, const float *dy,
                                         const float *w, float *dx);

/* dx = the depthwise input error (overwritten, every cell written): for stride 1, the gather
   with window rows in the padding read from a zero row, where the sums start at +0 (a
   filter that is not finite: the masked gather). The same bits as zeroing dx and calling
   mdy_conv3x3_depthwise_backward_input; 0, touching nothing, for shapes it does not take. */
int mdy_conv3x3_depthwise_backward_input_fresh(const mdy_conv_shape_t *s, const float *dy,
                                               const float *w, float *dx);

/* mdy_conv2d_backward_weight_channels (conv.h) for a 3x3 kernel on input maps at most 64
   wide: the border columns' masks computed once per call, the window rows in the padding read
   from a zero row (bit-identity conditions: conv.h). */
int mdy_conv3x3_backward_weights(const mdy_conv_shape_t *s, const float *dy, uint32_t n,
                                 const uint16_t *channels, uint32_t first_channel, float *pool,
                                 const uint32_t *offsets, uint32_t x_offset);

#endif /* MDY_CONV_WINDOW_H */
