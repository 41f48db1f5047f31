/* Fully connected layer kernels (see linear.h). */
#include "linear.h"

#include <stddef.h>

#include "sgd.h"

void mdy_linear_forward(uint16_t in_f, uint16_t out_f, const float *x, const float *w,
                        const float *b, float *y)
{
    uint32_t o, i;

    for (o = 0; o < out_f; ++o) {
        const float *w_o = w + o * in_f;  /* row o: in_f */
        float acc = b != NULL ? b[o] : 0.0f;
        for (i = 0; i < in_f; ++i) {
            acc += w_o[i] * x[i];
        }
        y[o] = acc;
    }
}

void mdy_linear_backward_input(uint16_t in_f, uint16_t out_f, const float *dy, const float *w,
                               float *dx, int accumulate)
{
    uint32_t o, i;

    if (!accumulate) {
        mdy_zero(in_f, dx);
    }
    /* Row by row, so w is read in memory order: dx += dy[o] * w[o][:]. */
    for (o = 0; o < out_f; ++o) {
        const float *w_o = w + o * in_f;
        const float d = dy[o];
        for (i = 0; i < in_f; ++i) {
            dx[i] += d * w_o[i];
        }
    }
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
