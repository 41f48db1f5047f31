/*
 * exp and log in float32 from IEEE basic operations (see mdy_math.h).
 *
 * The reductions and the rational forms are those of Sun's fdlibm as kept in FreeBSD's msun
 * (e_expf.c, e_logf.c: "developed at SunPro ... freely granted"), with its float-fitted
 * polynomial coefficients, written out here without any libm call.
 */
#include "mdy_math.h"

#include <float.h>
#include <stdint.h>

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "mdy_math.c needs float expressions evaluated in float (FLT_EVAL_METHOD 0)"
#endif

typedef union {
    float f;
    uint32_t u;
} mdy_float_bits_t;

static float from_bits(uint32_t u)
{
    mdy_float_bits_t b;
    b.u = u;
    return b.f;
}

static uint32_t to_bits(float f)
{
    mdy_float_bits_t b;
    b.f = f;
    return b.u;
}

/* 2^k for -126 <= k <= 127, exactly. */
static float power_of_two(int32_t k)
{
    return from_bits((uint32_t)(k + 127) << 23);
}

/* ---- exp ---------------------------------------------------------------------------------- */

#define EXP_OVERFLOW 0x1.62e42ep+6f   /* 88.7228317: the largest x with e^x < FLT_MAX */
#define EXP_UNDERFLOW -0x1.9fe36ap+6f /* -103.972084: e^x rounds to 0 below */
#define HALF_LN2 0x1.62e430p-2f       /* 0.34657359 */
#define EXP_TINY 0x1p-14f             /* below, 1 + x is e^x correctly rounded */
#define INV_LN2 0x1.715476p+0f        /* 1.44269502 */
#define LN2_HI 0x1.62e400p-1f         /* ln 2 to 15 bits: k * LN2_HI is exact for |k| < 2^9 */
#define LN2_LO 0x1.7f7d1cp-20f        /* ln 2 - LN2_HI */
/* |r (e^r + 1) / (e^r - 1) - (2 + P1 r^2 + P2 r^4)| < 2^-27.74 on |r| <= ln2 / 2 */
#define EXP_P1 0x1.55551ep-3f   /* 1.6666625440e-1 */
#define EXP_P2 -0x1.6aa42ap-9f  /* -2.7667332906e-3 */

float mdy_expf(float x)
{
    float hi, lo, r, rr, c, y, t;
    int32_t k;
    if (x != x) {
        return x + x;
    }
    if (x > EXP_OVERFLOW) {
        return from_bits(0x7f800000u);
    }
    if (x < EXP_UNDERFLOW) {
        return 0.0f;
    }
    if (x > -EXP_TINY && x < EXP_TINY) {
        return 1.0f + x;
    }
    if (x >= -HALF_LN2 && x <= HALF_LN2) {
        /* e^x = 1 + x + x c / (2 - c), c = x - x^2 (P1 + P2 x^2) */
        rr = x * x;
        c = x - rr * (EXP_P1 + rr * EXP_P2);
        return 1.0f - ((x * c) / (c - 2.0f) - x);
    }
    /* x = k ln2 + r, |r| <= ln2 / 2 (about), r = hi - lo with hi exact */
    t = x * INV_LN2;
    k = (int32_t)(t < 0.0f ? t - 0.5f : t + 0.5f);
    hi = x - (float)k * LN2_HI;
    lo = (float)k * LN2_LO;
    r = hi - lo;
    rr = r * r;
    c = r - rr * (EXP_P1 + rr * EXP_P2);
    y = 1.0f - ((lo - (r * c) / (2.0f - c)) - hi);
    if (k > 127) {
        return y * 2.0f * power_of_two(127);
    }
    if (k < -125) { /* a subnormal result: scale in two steps, the last one rounds */
        return y * power_of_two(k + 100) * 0x1p-100f;
    }
    return y * power_of_two(k);
}

/* ---- log ---------------------------------------------------------------------------------- */

#define LOG_LN2_HI 0x1.62e300p-1f /* ln 2 to 17 bits: k * LOG_LN2_HI is exact for |k| < 2^7 */
#define LOG_LN2_LO 0x1.2fefa2p-17f /* ln 2 - LOG_LN2_HI */
/* |(log(1 + s) - log(1 - s)) / s - (2 s + Lg1 s^3 + ... + Lg4 s^9) / s| < 2^-34.24,
 * |s| <= 0.1716 (FreeBSD e_logf.c) */
#define LG1 0x1.555554p-1f /* 0.66666662693 */
#define LG2 0x1.999c26p-2f /* 0.40000972152 */
#define LG3 0x1.23d3dcp-2f /* 0.28498786688 */
#define LG4 0x1.f13c4cp-3f /* 0.24279078841 */

float mdy_logf(float x)
{
    float f, s, z, w, r, hfsq, dk;
    uint32_t ix = to_bits(x), m, half;
    int32_t k = 0;
    if (x != x) {
        return x + x;
    }
    if ((ix & 0x7fffffffu) == 0u) {
        return from_bits(0xff800000u); /* -inf */
    }
    if (ix & 0x80000000u) {
        return (x - x) / (x - x); /* NaN */
    }
    if (ix >= 0x7f800000u) {
        return x; /* +inf */
    }
    if (ix < 0x00800000u) { /* subnormal: scale into the normal range */
        x *= 0x1p25f;
        k = -25;
        ix = to_bits(x);
    }
    /* x = 2^k (1 + f), 1 + f in [sqrt(2)/2, sqrt(2)) */
    k += (int32_t)(ix >> 23) - 127;
    m = ix & 0x007fffffu;
    half = (m + 0x4afb20u) & 0x00800000u; /* set when the mantissa is >= sqrt(2) */
    x = from_bits(m | (half ^ 0x3f800000u));
    k += (int32_t)(half >> 23);
    f = x - 1.0f;
    if (f == 0.0f) {
        dk = (float)k;
        return dk * LOG_LN2_HI + dk * LOG_LN2_LO;
    }
    /* log(1 + f) = f - f^2 / 2 + s (f^2 / 2 + R), s = f / (2 + f) */
    s = f / (2.0f + f);
    z = s * s;
    w = z * z;
    r = z * (LG1 + w * LG3) + w * (LG2 + w * LG4);
    hfsq = 0.5f * f * f;
    dk = (float)k;
    return dk * LOG_LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LOG_LN2_LO)) - f);
}
