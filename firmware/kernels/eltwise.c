/* Element-wise kernels (see eltwise.h). */
#include "eltwise.h"

#include <string.h>

void mdy_add_forward(uint32_t n, const float *a, const float *b, float *y)
{
    uint32_t i = 0u;
    for (; i + 4u <= n; i += 4u) {
        y[i] = a[i] + b[i];
        y[i + 1u] = a[i + 1u] + b[i + 1u];
        y[i + 2u] = a[i + 2u] + b[i + 2u];
        y[i + 3u] = a[i + 3u] + b[i + 3u];
    }
    for (; i < n; ++i) {
        y[i] = a[i] + b[i];
    }
}

/* dst = src (accumulate 0; nothing to do when dst is src) or dst += src (accumulate 1). */
static void copy_or_accumulate(uint32_t n, const float *src, float *dst, int accumulate)
{
    uint32_t i;
    if (accumulate) {
        for (i = 0; i < n; ++i) {
            dst[i] += src[i];
        }
    } else if (dst != src) {
        for (i = 0; i < n; ++i) {
            dst[i] = src[i];
        }
    }
}

void mdy_add_backward(uint32_t n, const float *dy, float *dx, int accumulate)
{
    copy_or_accumulate(n, dy, dx, accumulate);
}

void mdy_flatten_forward(uint32_t n, const float *x, float *y)
{
    copy_or_accumulate(n, x, y, 0);
}

void mdy_flatten_backward(uint32_t n, const float *dy, float *dx, int accumulate)
{
    copy_or_accumulate(n, dy, dx, accumulate);
}

/* Bit 8 of the exponent field + 1: set exactly when the exponent is all ones (an infinity or a
   NaN), so OR-ing these over a run tells whether the run is finite without a branch per value. */
static inline uint32_t not_finite_bit(const float *v)
{
    uint32_t u;
    memcpy(&u, v, sizeof u);
    return (((u >> 23) & 0xffu) + 1u) & 0x100u;
}

int mdy_all_finite(uint32_t n, const float *x)
{
    uint32_t i = 0, bad = 0;
    for (; i + 4u <= n; i += 4u) {
        bad |= not_finite_bit(x + i) | not_finite_bit(x + i + 1) | not_finite_bit(x + i + 2)
               | not_finite_bit(x + i + 3);
    }
    for (; i < n; ++i) {
        bad |= not_finite_bit(x + i);
    }
    return bad == 0u;
}
