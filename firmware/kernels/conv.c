/*
 * 2-D convolution kernels (see conv.h). Direct loops, no im2col; the only scratch memory is one
 * output channel's dequantized filter for the kernels with int8 weights (*_w8).
 *
 * Every kernel walks the output pixels; for each it computes once which kernel taps fall
 * inside the input (mdy_window_taps, window.h), so padded taps are skipped by loop bounds rather
 * than by a test per multiply.
 */
#include "conv.h"

#include <stddef.h>

#include "conv_pointwise.h"
#include "conv_stem.h"

#include "conv_window.h"
#include "quant.h"
#include "sgd.h"
#include "window.h"

/* A 1x1 convolution with stride 1 and no padding: each output map is a weighted sum of the input
 * maps of its group, computed a whole map at a time (contiguous, vectorisable inner loops). */
static int is_pointwise(const mdy_conv_shape_t *s)
{
    return s->k_h == 1 && s->k_w == 1 && s->stride_h == 1 && s->stride_w == 1
        && s->pad_top == 0 && s->pad_left == 0 && s->out_h == s->in_h && s->out_w == s->in_w;
}

/* Output channel o of the forward, y_o = b[o] + conv(x, w_o) with w_o its cpg x k_h x k_w
   filter. Pointwise: y_o = b[o] + sum_ic w_o[ic] x[ic], a whole map at a time, in the same
   summation order as the general loop. */
static void forward_channel(const mdy_conv_shape_t *s, int pointwise, int32_t o,
                            const float *x, const float *w_o, const float *b, float *y)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int32_t k_h = s->k_h, k_w = s->k_w, in_hw = in_h * in_w, k_hw = k_h * k_w;
    const int32_t cpg = s->in_c / s->groups;   /* input channels per group */
    const int32_t opg = s->out_c / s->groups;  /* output channels per group */
    const float *x_g = x + (o / opg) * cpg * in_hw;  /* group's inputs: cpg x in_h x in_w */
    const float bias = b != NULL ? b[o] : 0.0f;
    float *y_o = y + o * out_h * out_w;              /* out_h x out_w */
    int32_t oy, ox, ic, ky, kx;

    if (pointwise) {  /* one channel (int8 weights); float weights take forward()'s path */
        mdy_pointwise_forward(1, cpg, in_hw, x_g, w_o, &bias, y_o);
        return;
    }
    if (mdy_conv3x3_forward(s, x_g, w_o, bias, y_o)) {
        return;
    }
    for (oy = 0; oy < out_h; ++oy) {
        const int32_t iy0 = oy * s->stride_h - s->pad_top;
        int32_t ky_lo, ky_hi;
        mdy_window_taps(iy0, in_h, k_h, &ky_lo, &ky_hi);

        for (ox = 0; ox < out_w; ++ox) {
            const int32_t ix0 = ox * s->stride_w - s->pad_left;
            int32_t kx_lo, kx_hi;
            float acc = bias;
            mdy_window_taps(ix0, in_w, k_w, &kx_lo, &kx_hi);

            for (ic = 0; ic < cpg; ++ic) {
                const float *x_c = x_g + ic * in_hw;
                const float *w_c = w_o + ic * k_hw;
                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    const float *x_row = x_c + (iy0 + ky) * in_w;
                    const float *w_row = w_c + ky * k_w;
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        acc += x_row[ix0 + kx] * w_row[kx];
                    }
                }
            }
            y_o[oy * out_w + ox] = acc;
        }
    }
}

/* Output channel o's share of the input error: every error of dy_o flows back along the
   weights of its window (scatter). Pointwise: dx[ic] += w_o[ic] dy_o, a whole map at a time. */
static void backward_input_channel(const mdy_conv_shape_t *s, int pointwise, int32_t o,
                                   const float *dy, const float *w_o, float *dx)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int32_t k_h = s->k_h, k_w = s->k_w, in_hw = in_h * in_w, k_hw = k_h * k_w;
    const int32_t cpg = s->in_c / s->groups;
    const int32_t opg = s->out_c / s->groups;
    float *dx_g = dx + (o / opg) * cpg * in_hw;      /* cpg x in_h x in_w */
    const float *dy_o = dy + o * out_h * out_w;      /* out_h x out_w */
    int32_t oy, ox, ic, ky, kx;

    if (pointwise) {  /* one channel (int8 weights); float weights take backward_input()'s */
        mdy_pointwise_backward_input(1, cpg, in_hw, dy_o, w_o, dx_g);
        return;
    }
    if (mdy_conv3x3_backward_input(s, dy_o, w_o, dx_g)) {
        return;
    }
    for (oy = 0; oy < out_h; ++oy) {
        const int32_t iy0 = oy * s->stride_h - s->pad_top;
        int32_t ky_lo, ky_hi;
        mdy_window_taps(iy0, in_h, k_h, &ky_lo, &ky_hi);

        for (ox = 0; ox < out_w; ++ox) {
            const int32_t ix0 = ox * s->stride_w - s->pad_left;
            const float d = dy_o[oy * out_w + ox];
            int32_t kx_lo, kx_hi;
            mdy_window_taps(ix0, in_w, k_w, &kx_lo, &kx_hi);

            for (ic = 0; ic < cpg; ++ic) {
                float *dx_c = dx_g + ic * in_hw;
                const float *w_c = w_o + ic * k_hw;
                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    float *dx_row = dx_c + (iy0 + ky) * in_w;
                    const float *w_row = w_c + ky * k_w;
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        dx_row[ix0 + kx] += d * w_row[kx];
                    }
                }
            }
        }
    }
}

/* Output channel o's filter (cpg x k_h x k_w floats): in w, or, with int8 weights (w8 not
   NULL), dequantized into scratch as w_scale[o] * w8[o][i] (mdy_dequantize). */
static const float *filter(const mdy_conv_shape_t *s, int32_t o, const float *w,
                           const int8_t *w8, const float *w_scale, float *scratch)
{
    const uint32_t n = (uint32_t)(s->in_c / s->groups) * s->k_h * s->k_w;
    if (w8 == NULL) {
        return w + (uint32_t)o * n;
    }
    mdy_dequantize(n, w8 + (uint32_t)o * n, w_scale[o], 0, scratch);
    return scratch;
}

/* The forward of float (w) or int8 (w8, w_scale, scratch) weights, channel by channel. */
static void forward(const mdy_conv_shape_t *s, const float *x, const float *w, const int8_t *w8,
                    const float *w_scale, const float *b, float *y, float *scratch)
{
    const int pointwise = is_pointwise(s);
    int32_t o;
    if (pointwise && w8 == NULL) {
        mdy_conv_pointwise_forward(s, x, w, b, y);
        return;
    }
    if (w8 == NULL && mdy_conv3x3_depthwise_forward(s, x, w, b, y)) {
        return;
    }
    if (w8 == NULL && mdy_conv3x3_stride2_forward(s, x, w, b, y)) {
        return;
    }
    for (o = 0; o < s->out_c; ++o) {
        forward_channel(s, pointwise, o, x, filter(s, o, w, w8, w_scale, scratch), b, y);
    }
}

/* The input error of float (w) or int8 (w8, w_scale, scratch) weights, channel by channel. */
static void backward_input(const mdy_conv_shape_t *s, const float *dy, const float *w,
                           const int8_t *w8, const float *w_scale, float *dx, int accumulate,
                           float *scratch)
{
    const int pointwise = is_pointwise(s);
    int32_t o;
    if (!accumulate && w8 == NULL && mdy_conv3x3_depthwise_backward_input_fresh(s, dy, w, dx)) {
        return;
    }
    if (!accumulate) {
        mdy_zero((uint32_t)s->in_c * (uint32_t)(s->in_h * s->in_w), dx);
    }
    if (pointwise && w8 == NULL) {
        mdy_conv_pointwise_backward_input(s, dy, w, dx);
        return;
    }
    if (w8 == NULL && mdy_conv3x3_depthwise_backward_input(s, dy, w, dx)) {
        return;
    }
    for (o = 0; o < s->out_c; ++o) {
        backward_input_channel(s, pointwise, o, dy, filter(s, o, w, w8, w_scale, scratch), dx);
    }
}

void mdy_conv2d_forward(const mdy_conv_shape_t *s, const float *x, const float *w,
                        const float *b, float *y)
{
    forward(s, x, w, NULL, NULL, b, y, NULL);
}

void mdy_conv2d_forward_w8(const mdy_conv_shape_t *s, const float *x, const int8_t *w,
                           const float *w_scale, const float *b, float *y, float *scratch)
{
    forward(s, x, NULL, w, w_scale, b, y, scratch);
}

void mdy_conv2d_backward_input(const mdy_conv_shape_t *s, const float *dy, const float *w,
                               float *dx, int accumulate)
{
    backward_input(s, dy, w, NULL, NULL, dx, accumulate, NULL);
}

void mdy_conv2d_backward_input_w8(const mdy_conv_shape_t *s, const float *dy, const int8_t *w,
                                  const float *w_scale, float *dx, int accumulate,
                                  float *scratch)
{
    backward_input(s, dy, NULL, w, w_scale, dx, accumulate, scratch);
}

void mdy_conv2d_backward_weight_channel(const mdy_conv_shape_t *s, const float *dy,
                                        const float *x_channel, uint16_t c, float *grad_slice)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int32_t k_h = s->k_h, k_w = s->k_w, k_hw = k_h * k_w;
    const int32_t cpg = s->in_c / s->groups;
    const int32_t opg = s->out_c / s->groups;
    const int32_t o_first = (c / cpg) * opg;  /* first output channel of c's group */
    int32_t m, oy, ox, ky, kx;

    if (mdy_conv_pointwise_backward_weight(s, dy, x_channel, c, grad_slice)) {
        return;
    }
    for (m = 0; m < opg; ++m) {
        const float *dy_o = dy + (o_first + m) * out_h * out_w;  /* out_h x out_w */
        float *g_m = grad_slice + m * k_hw;                       /* k_h x k_w */
        if (mdy_conv3x3_backward_weight(s, dy_o, x_channel, g_m)) {
            continue;
        }

        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * s->stride_h - s->pad_top;
            int32_t ky_lo, ky_hi;
            mdy_window_taps(iy0, in_h, k_h, &ky_lo, &ky_hi);

            for (ox = 0; ox < out_w; ++ox) {
                const int32_t ix0 = ox * s->stride_w - s->pad_left;
                const float d = dy_o[oy * out_w + ox];
                int32_t kx_lo, kx_hi;
                mdy_window_taps(ix0, in_w, k_w, &kx_lo, &kx_hi);

                /* dW[o][c][ky][kx] += dy[o][oy][ox] * x[c][iy0 + ky][ix0 + kx] */
                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    const float *x_row = x_channel + (iy0 + ky) * in_w;
                    float *g_row = g_m + ky * k_w;
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        g_row[kx] += d * x_row[ix0 + kx];
                    }
                }
            }
        }
    }
}

void mdy_conv2d_backward_weight_channels(const mdy_conv_shape_t *s, const float *dy, uint32_t n,
                                         const uint16_t *channels, uint32_t first_channel,
                                         float *pool, const uint32_t *offsets,
                                         uint32_t x_offset)
{
    uint32_t j;
    if (mdy_conv_pointwise_backward_weights(s, dy, n, channels, first_channel, pool, offsets,
                                            x_offset)
        || mdy_conv3x3_backward_weights(s, dy, n, channels, first_channel, pool, offsets,
                                        x_offset)) {
        return;
    }
    for (j = 0; j < n; ++j) {
        float *slot = pool + offsets[j];
        mdy_conv2d_backward_weight_channel(s, dy, slot + x_offset,
                                           (uint16_t)(channels[j] - first_channel), slot);
    }
}
