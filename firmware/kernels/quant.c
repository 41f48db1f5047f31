/* The int8 scheme's arithmetic (see quant.h, docs/quantization.md §2-3). No libm. */
#include "quant.h"

/* The requantization's right shifts (quant.h) must be arithmetic on negative values
   (implementation-defined in C99; true on gcc, clang and arm-none-eabi-gcc): a compiler where
   it is not fails here, at compile time. */
typedef char mdy_arithmetic_shift_check[((int32_t)-1 >> 1) == -1
                                        && ((int32_t)INT32_MIN >> 31) == -1
                                        && ((int64_t)-1 >> 1) == -1 ? 1 : -1];

int32_t mdy_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    return mdy_requantize_inline(x, multiplier, shift);
}

/* round_half_even(v) for v in [-256, 256], by truncation and a fix-up (IEEE operations only:
   v - trunc(v) is exact for such v). */
static int32_t round_half_even(float v)
{
    const int32_t t = (int32_t)v;  /* toward zero */
    const float frac = v - (float)t;
    const int32_t odd = t % 2 != 0;
    if (frac > 0.5f || (frac == 0.5f && odd)) {
        return t + 1;
    }
    if (frac < -0.5f || (frac == -0.5f && odd)) {
        return t - 1;
    }
    return t;
}

void mdy_quantize(uint32_t n, const float *x, float scale, int32_t zero_point, int8_t *q)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        float v = x[i] / scale;
        /* |zero_point| <= 128, so any |v| >= 256 saturates to -128 or 127 like +-256 does */
        if (v > 256.0f) {
            v = 256.0f;
        } else if (v < -256.0f) {
            v = -256.0f;
        }
        q[i] = mdy_q8_output(zero_point, round_half_even(v), -128, 127);
    }
}

void mdy_dequantize(uint32_t n, const int8_t *q, float scale, int32_t zero_point, float *x)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        x[i] = scale * (float)(q[i] - zero_point);
    }
}

void mdy_q8_rescale_forward(uint32_t n, const mdy_q8_rescale_t *p, const int8_t *x, int8_t *y)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = mdy_q8_output(p->out_zero, mdy_requantize(x[i] - p->in_zero, p->multiplier,
                                                         p->shift), p->act_min, p->act_max);
    }
}
