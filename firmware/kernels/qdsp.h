/*
 * Helpers of the int8 kernels' Cortex-M DSP-extension paths (qconv.c, qblock.c): compiled only
 * where __ARM_FEATURE_DSP is defined (Cortex-M4/M7: SXTB16, PKHBT/PKHTB, SMLAD); elsewhere the
 * portable loops run. A 16-bit pair (lo, hi) is a word whose low half is lo and high half hi.
 *
 * SMLAD adds two 16 x 16-bit products to a 32-bit accumulator, wrapping modulo 2^32 (it sets
 * only the Q flag): every DSP path's accumulator ends on the exact integer sum of the portable
 * loop, which qconv.h's bound keeps inside int32, so a wrapped partial sum cannot change it.
 */
#ifndef MDY_QDSP_H
#define MDY_QDSP_H

#if defined(__ARM_FEATURE_DSP)

#include <arm_acle.h>
#include <stdint.h>
#include <string.h>

/* The four int8 at p as one little-endian word; any alignment (ARMv7E-M loads unaligned). */
static inline int32_t mdy_dsp_load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Bytes 0 and 2 of v, sign-extended, as the pair (b0, b2). */
static inline int32_t mdy_dsp_even(int32_t v)
{
    return __sxtb16(v);
}

/* Bytes 1 and 3 of v, sign-extended, as the pair (b1, b3): SXTB16 with its rotation by 8
   (gcc 12 has no intrinsic for the rotated form and does not fold the rotation itself). */
static inline int32_t mdy_dsp_odd(int32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* The pair (low half of a, low half of b): PKHBT (gcc 12 builds it from two instructions). */
static inline int32_t mdy_dsp_low(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* The pair (high half of a, high half of b): PKHTB. */
static inline int32_t mdy_dsp_high(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* Two consecutive int32 by one LDRD / STRD (p word-aligned; gcc 12 splits the C into two
   LDR / STR). */
static inline void mdy_dsp_load_pair(const int32_t *p, int32_t *a, int32_t *b)
{
    int32_t lo, hi;
    __asm__("ldrd %0, %1, [%2]" : "=r"(lo), "=r"(hi) : "r"(p) : "memory");
    *a = lo;
    *b = hi;
}

static inline void mdy_dsp_store_pair(int32_t *p, int32_t a, int32_t b)
{
    __asm__("strd %1, %2, [%0]" : : "r"(p), "r"(a), "r"(b) : "memory");
}

#endif /* __ARM_FEATURE_DSP */

#endif /* MDY_QDSP_H */
