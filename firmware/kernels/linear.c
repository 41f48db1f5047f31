/* Fully connected layer kernels (see linear.h); the *_w8 ones dequantize one row at a time. */
#include "linear.h"

#include <stddef.h>

#include "quant.h"
#include "sgd.h"

/* Row o of the weights: in w, or, with int8 weights (w8 not NULL), dequantized into scratch as
   w_scale[o] * w8[o][i] (mdy_dequantize). */
static const float *row(uint16_t in_f, uint32_t o, const float *w, const int8_t *w8,
                        const float *w_scale, float *scratch)
{
    if (w8 == NULL) {
        return w + o * in_f;
    }
    mdy_dequantize(in_f, w8 + o * in_f, w_scale[o], 0, scratch);
    return scratch;
}

/* The forward of float (w) or int8 (w8, w_scale, scratch) weights, row by row. */
static void forward(uint16_t in_f, uint16_t out_f, const float *x, const float *w,
                    const int8_t *w8, const float *w_scale, const float *b, float *y,
                    float *scratch)
{
    uint32_t o, i;

    for (o = 0; o < out_f; ++o) {
        const float *w_o = row(in_f, o, w, w8, w_scale, scratch);  /* row o: in_f */
        float acc = b != NULL ? b[o] : 0.0f;
        for (i = 0; i < in_f; ++i) {
            acc += w_o[i] * x[i];
        }
        y[o] = acc;
    }
}

/* The input error of float (w) or int8 (w8, w_scale, scratch) weights. */
static void backward_input(uint16_t in_f, uint16_t out_f, const float *dy, const float *w,
                           const int8_t *w8, const float *w_scale, float *dx, int accumulate,
                           float *scratch)
{
    uint32_t o, i;

    if (!accumulate) {
        mdy_zero(in_f, dx);
    }
    /* Row by row, so w is read in memory order: dx += dy[o] * w[o][:]. */
    for (o = 0; o < out_f; ++o) {
        const float *w_o = row(in_f, o, w, w8, w_scale, scratch);
        const float d = dy[o];
        for (i = 0; i < in_f; ++i) {
            dx[i] += d * w_o[i];
        }
    }
}

void mdy_linear_forward(uint16_t in_f, uint16_t out_f, const float *x, const float *w,
                        const float *b, float *y)
{
    forward(in_f, out_f, x, w, NULL, NULL, b, y, NULL);
}

void mdy_linear_forward_w8(uint16_t in_f, uint16_t out_f, const float *x, const int8_t *w,
                           const float *w_scale, const float *b, float *y, float *scratch)
{
    forward(in_f, out_f, x, NULL, w, w_scale, b, y, scratch);
}

void mdy_linear_backward_input(uint16_t in_f, uint16_t out_f, const float *dy, const float *w,
                               float *dx, int accumulate)
{
    backward_input(in_f, out_f, dy, w, NULL, NULL, dx, accumulate, NULL);
}

void mdy_linear_backward_input_w8(uint16_t in_f, uint16_t out_f, const float *dy,
                                  const int8_t *w, const float *w_scale, float *dx,
                                  int accumulate, float *scratch)
{
    backward_input(in_f, out_f, dy, NULL, w, w_scale, dx, accumulate, scratch);
}

void mdy_linear_backward_weight(uint16_t in_f, uint16_t out_f, const float *dy, const float *x,
                                float *gw, float *gb)
{
    uint32_t o, i;

    for (o = 0; o < out_f; ++o) {
        float *gw_o = gw + o * in_f;
        const float d = dy[o];
        for (i = 0; i < in_f; ++i) {
            gw_o[i] += d * x[i];
        }
        if (gb != NULL) {
            gb[o] += d;
        }
    }
}
