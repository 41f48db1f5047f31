/* ReLU and ReLU6, forward with gradient masks and masked backward (see activation.h). */
#include "activation.h"

#include <stddef.h>

/*
 * y = clamp(x, 0, hi) (no upper bound when has_hi is 0); mask bit = 0 < x < hi.
 * Comparisons are false for NaN, so a NaN passes through unchanged with mask bit 0.
 */
static void clamp_forward(uint32_t n, const float *x, float *y, uint8_t *mask, int has_hi,
                          float hi)
{
    uint32_t i, bits = 0u;  /* mask bits of the current byte */

    for (i = 0; i < n; ++i) {
        const float v = x[i];
        const int pass = v > 0.0f && (!has_hi || v < hi);
        float out = v;
        if (v <= 0.0f) {
            out = 0.0f;
        } else if (has_hi && v >= hi) {
            out = hi;
        }
        y[i] = out;
        bits |= (uint32_t)pass << (i & 7u);
        if (mask != NULL && ((i & 7u) == 7u || i + 1u == n)) {
            mask[i >> 3] = (uint8_t)bits;
            bits = 0u;
        }
    }
}

void mdy_relu_forward(uint32_t n, const float *x, float *y, uint8_t *mask)
{
    clamp_forward(n, x, y, mask, 0, 0.0f);
}

void mdy_relu6_forward(uint32_t n, const float *x, float *y, uint8_t *mask)
{
    clamp_forward(n, x, y, mask, 1, 6.0f);
}

/* dx = dy where the mask bit is 1, else 0 (accumulate: masked-out cells keep their value). */
static void masked_backward(uint32_t n, const float *dy, const uint8_t *mask, float *dx,
                            int accumulate)
{
    uint32_t i;

    for (i = 0; i < n; ++i) {
        const int pass = (mask[i >> 3] >> (i & 7u)) & 1;
        if (accumulate) {
            if (pass) {
                dx[i] += dy[i];
            }
        } else {
            dx[i] = pass ? dy[i] : 0.0f;
        }
    }
}

void mdy_relu_backward(uint32_t n, const float *dy, const uint8_t *mask, float *dx,
                       int accumulate)
{
    masked_backward(n, dy, mask, dx, accumulate);
}

void mdy_relu6_backward(uint32_t n, const float *dy, const uint8_t *mask, float *dx,
                        int accumulate)
{
    masked_backward(n, dy, mask, dx, accumulate);
}
