/* MeDyate channel sampler; see sampler.h for the contract. */
#include "sampler.h"

#include <float.h>

#include "pcg32.h"

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "sampler.c needs float expressions evaluated in float (FLT_EVAL_METHOD == 0)"
#endif

static int mdy_norm_is_valid(float x)
{
    /* False for NaN (every comparison fails), infinities and negatives; true for -0.0f. */
    return x >= 0.0f && x <= FLT_MAX;
}

mdy_status_t mdy_channel_weights(const float *norms, uint32_t n, int uniform,
                                 uint32_t *weights_out)
{
    float largest = 0.0f;
    uint32_t c;

    if (n > MDY_SAMPLER_MAX_CHANNELS) {
        return MDY_ERR_TOO_MANY;
    }
    if (n > 0u && (weights_out == 0 || (!uniform && norms == 0))) {
        return MDY_ERR_NULL;
    }
    if (!uniform) {
        for (c = 0; c < n; ++c) {
            if (!mdy_norm_is_valid(norms[c])) {
                return MDY_ERR_BAD_NORM;
            }
            if (norms[c] > largest) {
                largest = norms[c];
            }
        }
    }
    for (c = 0; c < n; ++c) {
        uint32_t w = 1u;
        if (!uniform && largest > 0.0f) {
            /* One rounding per statement; -ffp-contract=off keeps them unfused. */
            const float q = norms[c] / largest;
            const float scaled = q * 16777215.0f;
            const float rounded = scaled + 0.5f;
            w = (uint32_t)rounded;
            if (w < 1u) {
                w = 1u;
            }
        }
        weights_out[c] = w;
    }
    return MDY_OK;
}

/* (u * total) >> 32 without overflow: total split into 32-bit halves, 96-bit product. */
static uint64_t mdy_scale(uint32_t u, uint64_t total)
{
    const uint64_t hi = total >> 32;
    const uint64_t lo = total & UINT64_C(0xFFFFFFFF);
    return (uint64_t)u * hi + (((uint64_t)u * lo) >> 32);
}

static int mdy_any_fits(const uint32_t *costs, const uint8_t *in_pool, uint32_t n, uint32_t left)
{
    uint32_t c;
    for (c = 0; c < n; ++c) {
        if (in_pool[c] && costs[c] <= left) {
            return 1;
        }
    }
    return 0;
}

mdy_status_t mdy_select_channels(uint64_t seed, uint32_t epoch, const uint32_t *costs,
                                 const uint32_t *weights, uint32_t n, uint32_t budget,
                                 uint8_t *in_pool_scratch, uint16_t *selected_out,
                                 uint32_t selected_cap, uint32_t *n_selected)
{
    mdy_pcg32_t rng;
    uint64_t total = 0u;
    uint32_t left = budget;
    uint32_t count = 0u;
    uint32_t c;

    if (n_selected == 0) {
        return MDY_ERR_NULL;
    }
    *n_selected = 0u;
    if (epoch == 0u) {
        return MDY_ERR_BAD_EPOCH;
    }
    if (n > MDY_SAMPLER_MAX_CHANNELS) {
        return MDY_ERR_TOO_MANY;
    }
    if (n > 0u && (costs == 0 || weights == 0 || in_pool_scratch == 0 ||
                   (selected_out == 0 && selected_cap > 0u))) {
        return MDY_ERR_NULL;
    }
    for (c = 0; c < n; ++c) {
        if (weights[c] == 0u) {
            return MDY_ERR_BAD_WEIGHT;
        }
        in_pool_scratch[c] = 1u;
        total += weights[c]; /* < 2^16 * 2^32: no overflow */
    }

    mdy_pcg32_seed(&rng, seed, epoch);
    while (mdy_any_fits(costs, in_pool_scratch, n, left)) {
        const uint64_t r = mdy_scale(mdy_pcg32_next(&rng), total);
        uint64_t running = 0u;
        uint32_t pick = n;

        for (c = 0; c < n; ++c) {
            if (in_pool_scratch[c]) {
                running += weights[c];
                if (running > r) {
                    pick = c;
                    break;
                }
            }
        }
        /* r < total, so the scan always stops; pick < n. */
        in_pool_scratch[pick] = 0u;
        total -= weights[pick];
        if (costs[pick] <= left) {
            if (count == selected_cap) {
                *n_selected = count;
                return MDY_ERR_CAPACITY;
            }
            left -= costs[pick];
            selected_out[count] = (uint16_t)pick;
            ++count;
        }
    }
    *n_selected = count;
    return MDY_OK;
}
