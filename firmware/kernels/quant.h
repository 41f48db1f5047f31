/*
 * The int8 scheme of the frozen backbone (docs/quantization.md §1-3): requantization of an
 * int32 by a fixed-point multiplier, quantizing a float sample into the int8 region,
 * dequantizing an int8 tensor read by a float op, and the int8 rescale (an unfused ReLU/ReLU6,
 * a Flatten; the pools reuse its parameters).
 *
 * An int8 tensor holds q with real = scale * (q - zero_point). A real multiplier M > 0 is
 * (multiplier, shift) with M ~ multiplier * 2^shift / 2^31, multiplier in [2^30, 2^31) (or 0,
 * shift 0, for M < 2^-31) and shift in [-31, 30]; Python computes them, the C never sees M.
 * Every int8 result is clamp(zero + requantize(...), act_min, act_max), act_min/act_max being
 * -128/127 or a fused ReLU/ReLU6's range.
 */
#ifndef MDY_QUANT_H
#define MDY_QUANT_H

#include <stdint.h>

/*
 * y = clamp(out_zero + requantize(x - in_zero, multiplier, shift), act_min, act_max).
 * The pools (qpool.h) use the same parameters with their own sums in place of x - in_zero.
 */
typedef struct {
    int32_t in_zero, out_zero, multiplier, shift;
    int8_t act_min, act_max;
} mdy_q8_rescale_t;

/*
 * round(x * multiplier * 2^shift / 2^31) as gemmlowp computes it (docs/quantization.md §2):
 * x is first shifted left by max(shift, 0) with saturation, then multiplied by multiplier
 * and divided by 2^31 rounding to nearest, ties up (the one overflowing case, INT32_MIN *
 * INT32_MIN, gives INT32_MAX), then shifted right by max(-shift, 0) rounding half away from
 * zero.
 */
int32_t mdy_requantize(int32_t x, int32_t multiplier, int32_t shift);

/*
 * The steps of mdy_requantize, inline for the kernels' inner loops (quant.c's mdy_requantize
 * composes them). Left shift: x * 2^left saturated, by comparison (it leaves int32 exactly when
 * x > INT32_MAX >> left or x < INT32_MIN >> left).
 */
static inline int32_t mdy_shift_left_saturated(int32_t x, int32_t left)
{
    return x > (INT32_MAX >> left) ? INT32_MAX
        : x < (INT32_MIN >> left) ? INT32_MIN : x * ((int32_t)1 << left);
}

/* SRDHM but for a = b = INT32_MIN (the caller's case): gemmlowp's (ab + nudge) / 2^31, nudge
   2^30 for ab >= 0 and 1 - 2^30 below, truncated toward zero, is floor((ab + 2^30) / 2^31) for
   either sign (ab < 0: the quotient's ceiling, ceil(n / d) = floor((n + d - 1) / d)): one
   64-bit multiply-add and an arithmetic shift (quant.c checks that >> is arithmetic); with the
   DSP extension one SMLAL onto 2^30 (gcc 12 makes a 64 x 64-bit product of the C). */
static inline int32_t mdy_srdhm_nudged(int32_t a, int32_t b)
{
#if defined(__ARM_FEATURE_DSP)
    uint32_t lo = (uint32_t)1 << 30;
    uint32_t hi = 0;
    __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(a), "r"(b));
    return (int32_t)((lo >> 31) | (hi << 1));
#else
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
#endif
}

/* RDBPOT: v / 2^right rounded half away from zero; mask = 2^right - 1, half = mask >> 1. */
static inline int32_t mdy_rdbpot(int32_t v, int32_t right, int32_t mask, int32_t half)
{
    return (v >> right) + ((v & mask) > half + (v < 0 ? 1 : 0) ? 1 : 0);
}

static inline int32_t mdy_requantize_inline(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t right = shift < 0 ? -shift : 0;
    const int32_t mask = (int32_t)(((uint32_t)1 << right) - 1u);
    int32_t v;
    if (shift > 0) {
        x = mdy_shift_left_saturated(x, shift);
    }
    /* the one product whose doubled high half overflows saturates */
    v = x == INT32_MIN && multiplier == INT32_MIN ? INT32_MAX : mdy_srdhm_nudged(x, multiplier);
    return mdy_rdbpot(v, right, mask, mask >> 1);
}

/* One output channel's requantization, prepared once per channel: y = clamp(zero +
   requantize(acc), act_min, act_max) = zero + clamp(requantize(acc), lo, hi) with lo = act_min
   - zero and hi = act_max - zero (|zero| <= 128: no int32 overflow either way). The multiplier
   must be a kernel's (in [2^30, 2^31) or 0, never INT32_MIN: SRDHM needs no overflow check). */
typedef struct {
    int32_t multiplier, left, right, mask, half, zero, lo, hi;
} mdy_q8_requant_t;

static inline mdy_q8_requant_t mdy_q8_requant(int32_t multiplier, int32_t shift, int32_t zero,
                                              int8_t act_min, int8_t act_max)
{
    mdy_q8_requant_t r;
    r.multiplier = multiplier;
    r.left = shift > 0 ? shift : 0;
    r.right = shift < 0 ? -shift : 0;
    r.mask = (int32_t)(((uint32_t)1 << r.right) - 1u);
    r.half = r.mask >> 1;
    r.zero = zero;
    r.lo = act_min - zero;
    r.hi = act_max - zero;
    return r;
}

static inline int8_t mdy_q8_requant_apply(const mdy_q8_requant_t *r, int32_t acc)
{
    int32_t v;
    if (r->left > 0) {
        acc = mdy_shift_left_saturated(acc, r->left);
    }
    v = mdy_rdbpot(mdy_srdhm_nudged(acc, r->multiplier), r->right, r->mask, r->half);
    return (int8_t)(r->zero + (v < r->lo ? r->lo : v > r->hi ? r->hi : v));
}

/*
 * q[i] = clamp(round_half_even(x[i] / scale) + zero_point, -128, 127) in float32 (ONNX
 * QuantizeLinear), rounded with IEEE operations only. x must hold no NaN (the engine checks
 * its input first); infinities saturate.
 */
void mdy_quantize(uint32_t n, const float *x, float scale, int32_t zero_point, int8_t *q);

/* x[i] = scale * (float)(q[i] - zero_point) in float32. */
void mdy_dequantize(uint32_t n, const int8_t *q, float scale, int32_t zero_point, float *x);

/* The rescale above on n values. y may equal x (in place). */
void mdy_q8_rescale_forward(uint32_t n, const mdy_q8_rescale_t *p, const int8_t *x, int8_t *y);

/*
 * clamp(zero + v, lo, hi) as an int8, exact for every int32 v (no overflow in the addition):
 * the last step of every int8 kernel.
 */
static inline int8_t mdy_q8_output(int32_t zero, int32_t v, int8_t lo, int8_t hi)
{
    /* |zero| <= 128 and the result is clamped to [-128, 127]: saturating v to +-512 first
       changes nothing and keeps zero + v inside int32 */
    const int32_t w = zero + (v > 512 ? 512 : v < -512 ? -512 : v);
    return (int8_t)(w < lo ? lo : w > hi ? hi : w);
}

#endif /* MDY_QUANT_H */
