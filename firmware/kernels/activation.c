/* ReLU and ReLU6, forward with gradient masks and masked backward (see activation.h). Eight
   elements (one mask byte) at a time, the mask byte's bits set and read with constant shifts. */
#include "activation.h"

#include <stddef.h>
#include <string.h>

/*
 * y = clamp(v, 0, hi) (no upper bound for a ReLU); returns the mask bit 0 < v < hi (ReLU:
 * 0 < v). Decided on the bit pattern u of v, which gives IEEE comparisons exactly:
 * 0 < v < hi  <=>  1 <= u < bits(hi)  <=>  u - 1 < limit with limit = bits(hi) - 1 (ReLU:
 * 1 <= u <= bits(+infinity), limit = bits(+infinity)); otherwise a NaN (u << 1 above the
 * infinities') passes through unchanged with mask bit 0, +0, -0 and negatives (u == 0 or the sign
 * bit set) give +0, and the rest (v >= hi) gives hi.
 */
static inline uint32_t clamp1(const float *x, float *y, uint32_t limit, uint32_t hi_bits)
{
    uint32_t u;
    memcpy(&u, x, sizeof u);
    if (u - 1u < limit) {
        memcpy(y, &u, sizeof u);
        return 1u;
    }
    if ((u << 1) <= 0xff000000u) {  /* not a NaN */
        u = u - 1u >= 0x7fffffffu ? 0u : hi_bits;
    }
    memcpy(y, &u, sizeof u);
    return 0u;
}

/* Elements 0 .. 7 of x: their mask byte. */
static inline uint32_t clamp8(const float *x, float *y, uint32_t limit, uint32_t hi_bits)
{
    uint32_t bits = clamp1(x, y, limit, hi_bits);
    bits |= clamp1(x + 1, y + 1, limit, hi_bits) << 1;
    bits |= clamp1(x + 2, y + 2, limit, hi_bits) << 2;
    bits |= clamp1(x + 3, y + 3, limit, hi_bits) << 3;
    bits |= clamp1(x + 4, y + 4, limit, hi_bits) << 4;
    bits |= clamp1(x + 5, y + 5, limit, hi_bits) << 5;
    bits |= clamp1(x + 6, y + 6, limit, hi_bits) << 6;
    bits |= clamp1(x + 7, y + 7, limit, hi_bits) << 7;
    return bits;
}

static void clamp_forward(uint32_t n, const float *x, float *y, uint8_t *mask, uint32_t limit,
                          uint32_t hi_bits)
{
    uint32_t i = 0u, bits;

    for (; i + 8u <= n; i += 8u) {
        bits = clamp8(x + i, y + i, limit, hi_bits);
        if (mask != NULL) {
            mask[i >> 3] = (uint8_t)bits;
        }
    }
    if (i < n) {  /* the last n % 8: the high bits of the last byte stay 0 */
        bits = 0u;
        for (; i < n; ++i) {
            bits |= clamp1(x + i, y + i, limit, hi_bits) << (i & 7u);
        }
        if (mask != NULL) {
            mask[(n - 1u) >> 3] = (uint8_t)bits;
        }
    }
}

void mdy_relu_forward(uint32_t n, const float *x, float *y, uint8_t *mask)
{
    clamp_forward(n, x, y, mask, 0x7f800000u, 0u);  /* +infinity */
}

void mdy_relu6_forward(uint32_t n, const float *x, float *y, uint8_t *mask)
{
    clamp_forward(n, x, y, mask, 0x40bfffffu, 0x40c00000u);  /* 6.0f */
}

/* One element of the masked backward: dx = dy where bit is 1, else 0 (accumulate: += dy where
   bit is 1); in place (dx == dy, accumulate 0) only the masked-out cells are written. */
static inline void masked1(uint32_t bit, const float *dy, float *dx, int accumulate,
                           int in_place)
{
    if (accumulate) {
        if (bit != 0u) {
            *dx += *dy;
        }
    } else if (in_place) {
        if (bit == 0u) {
            *dx = 0.0f;
        }
    } else {
        *dx = bit != 0u ? *dy : 0.0f;
    }
}

/* Elements i .. i + 7 of masked_backward under the mask byte m. */
static inline void masked8(uint32_t m, const float *dy, float *dx, int accumulate,
                           int in_place)
{
    masked1(m & 1u, dy, dx, accumulate, in_place);
    masked1(m & 2u, dy + 1, dx + 1, accumulate, in_place);
    masked1(m & 4u, dy + 2, dx + 2, accumulate, in_place);
    masked1(m & 8u, dy + 3, dx + 3, accumulate, in_place);
    masked1(m & 16u, dy + 4, dx + 4, accumulate, in_place);
    masked1(m & 32u, dy + 5, dx + 5, accumulate, in_place);
    masked1(m & 64u, dy + 6, dx + 6, accumulate, in_place);
    masked1(m & 128u, dy + 7, dx + 7, accumulate, in_place);
}

static inline void masked_pass(uint32_t n, const float *dy, const uint8_t *mask, float *dx,
                               int accumulate, int in_place)
{
    uint32_t i = 0u;

    for (; i + 8u <= n; i += 8u) {
        const uint32_t m = mask[i >> 3];
        if (m == 0xffu && in_place) {
            continue;  /* every cell passes and already holds dy */
        }
        if (m == 0u && accumulate) {
            continue;  /* every cell masked out keeps its value */
        }
        masked8(m, dy + i, dx + i, accumulate, in_place);
    }
    for (; i < n; ++i) {
        masked1((mask[i >> 3] >> (i & 7u)) & 1u, dy + i, dx + i, accumulate, in_place);
    }
}

/* dx = dy where the mask bit is 1, else 0 (accumulate: masked-out cells keep their value). */
static void masked_backward(uint32_t n, const float *dy, const uint8_t *mask, float *dx,
                            int accumulate)
{
    if (accumulate) {
        masked_pass(n, dy, mask, dx, 1, 0);
    } else if (dx == dy) {
        masked_pass(n, dy, mask, dx, 0, 1);
    } else {
        masked_pass(n, dy, mask, dx, 0, 0);
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
