/* Element-wise kernels (see eltwise.h). */
#include "eltwise.h"

#include <math.h>

void mdy_add_forward(uint32_t n, const float *a, const float *b, float *y)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = a[i] + b[i];
    }
}

void mdy_copy_or_accumulate(uint32_t n, const float *src, float *dst, int accumulate)
{
    uint32_t i;
    if (accumulate) {
        for (i = 0; i < n; ++i) {
            dst[i] += src[i];
        }
    } else {
        for (i = 0; i < n; ++i) {
            dst[i] = src[i];
        }
    }
}

int mdy_all_finite(uint32_t n, const float *x)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        if (!isfinite(x[i])) {
            return 0;
        }
    }
    return 1;
}
