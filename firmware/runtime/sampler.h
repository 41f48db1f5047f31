/*
 * MeDyate channel sampler (docs/design.md §4 and §8).
 *
 * Bit-identical to medyate_mcu.method.sampler for the same seed, epoch, costs, budget and norm
 * vector. No heap and no global state: every buffer comes from the caller. Functions return the
 * runtime's status (mdy_status.h): MDY_OK or one of the MDY_ERR_* marked "sampler" there.
 *
 * Per epoch:
 *   1. mdy_channel_weights(norms, n, uniform, weights): integer weights from the norm vector,
 *      uniform (all 1) in epoch 1 (and for TraDy's uniform resampling).
 *   2. mdy_select_channels(seed, epoch, costs, weights, ...): draw without replacement until
 *      nothing left fits the budget.
 *
 * Epochs are numbered from 1; epoch 1 is the uniform one. Channels are indexed in canonical
 * candidate order (layer order, then input-channel index), at most MDY_SAMPLER_MAX_CHANNELS.
 *
 * Compile with -ffp-contract=off (and on a target with FLT_EVAL_METHOD == 0, subnormals not
 * flushed to zero): the weight formula is defined as separately rounded IEEE float32 operations,
 * and a fused multiply-add or wider intermediates would change some weights by one.
 */
#ifndef MDY_SAMPLER_H
#define MDY_SAMPLER_H

#include <stdint.h>

#include "mdy_status.h"

/* Selected indices are written as uint16_t. */
#define MDY_SAMPLER_MAX_CHANNELS 65536u

/* Largest weight: 1.0f * 16777215.0f + 0.5f rounds to 2^24 in float32. */
#define MDY_SAMPLER_MAX_WEIGHT 16777216u

/*
 * Integer draw weights from the norm vector, in IEEE float32 with each operation rounded:
 *   q = norms[c] / max(norms);  weights_out[c] = max(1, (uint32_t)(q * 16777215.0f + 0.5f)).
 * Every weight is 1 when uniform is nonzero (norms is then not read and may be NULL) or when
 * max(norms) == 0. A NaN, infinite or negative norm returns MDY_ERR_BAD_NORM and
 * leaves weights_out unwritten (-0.0f counts as zero). Returns MDY_OK on success.
 */
mdy_status_t mdy_channel_weights(const float *norms, uint32_t n, int uniform,
                                 uint32_t *weights_out);

/*
 * One epoch's channel selection.
 *
 * A fresh PCG32 seeded with (seed, epoch) as (initstate, initseq) drives the draws. All n
 * channels start in the pool. Before each draw, if no pooled channel's cost fits the
 * remaining budget, selection ends. A draw takes u = next output, total = sum of pooled
 * weights, r = (u * total) >> 32 (exact 96-bit product), and the first pooled channel, in
 * index order, whose running sum of pooled weights exceeds r. That channel leaves the pool;
 * if its cost fits the remaining budget it is selected and its cost is subtracted, otherwise
 * it is dropped for this epoch.
 *
 * costs, weights: n entries each (weights >= 1, e.g. from mdy_channel_weights); costs and
 *   budget in any one unit (bytes or elements).
 * in_pool_scratch: n bytes of caller scratch, overwritten.
 * selected_out: selected_cap entries; receives the selected indices in draw order.
 * n_selected: receives how many were selected (also on MDY_ERR_CAPACITY: how many
 *   were written before the buffer was full).
 * Pointers may be NULL only when n == 0 (n_selected never).
 */
mdy_status_t mdy_select_channels(uint64_t seed, uint32_t epoch, const uint32_t *costs,
                                 const uint32_t *weights, uint32_t n, uint32_t budget,
                                 uint8_t *in_pool_scratch, uint16_t *selected_out,
                                 uint32_t selected_cap, uint32_t *n_selected);

#endif /* MDY_SAMPLER_H */
