/*
 * The MeDyate training engine: the part that does not depend on the model.
 *
 * The generated model (model.c) provides the forward and backward passes as straight-line kernel
 * calls over a statically planned arena, and describes its trainable parts in `mdy_model`. This
 * runtime does the rest of the on-device algorithm (docs/design.md §4-6):
 *   - at the start of each epoch, draw the channels to update (sampler.h), lay them out in the
 *     channel pool (per selected channel: its gradient slice, C_W floats, then its saved input map,
 *     C_A floats) and zero their gradients;
 *   - per sample: check the input, forward (saving the selected channels' inputs), softmax
 *     cross-entropy, backward (accumulating the selected slices' and the classifier's gradients);
 *   - every `batch_size` samples (and at the end of the epoch): average the gradients, apply SGD
 *     with the epoch's learning rate, add each selected channel's gradient-slice norm to its epoch
 *     sum;
 *   - at the end of an epoch: update the norm vector (mean norm over the epoch's steps; after
 *     epoch 1 the never-selected channels get the largest), and draw the next selection.
 * No heap: every buffer is a static array declared by the generated model. No global either: every
 * function takes the model it works on (the generated one is `mdy_model`, model.h; a test can hand
 * it a model of its own).
 */
#ifndef MDY_ENGINE_H
#define MDY_ENGINE_H

#include <stdint.h>

#include "conv.h"
#include "mdy_status.h"

/* One candidate conv layer: the only layers whose input channels can be selected. */
typedef struct {
    const mdy_conv_shape_t *shape;
    float *weights;                /* RAM copy, (out_c, in_c/groups, k_h, k_w) */
    const float *initial_weights;  /* the pre-trained values, in flash (float32 backbone) */
    const int8_t *initial_q8;      /* or, with an int8 backbone, int8 weights in flash ... */
    const float *initial_scales;   /* ... and one scale per output channel: w = scale[o] q */
    uint32_t first_channel;        /* canonical index of this layer's input channel 0 */
    uint32_t weight_units;         /* C_W = (out_c/groups) k_h k_w */
    uint32_t activation_units;     /* C_A = in_h in_w */
} mdy_candidate_t;

/* The engine's scalars: exactly 64 bytes (the planner counts them as such). */
typedef struct {
    uint32_t epoch;              /* current epoch, from 1; 0 before mdy_init */
    uint32_t samples_in_batch;   /* samples accumulated since the last update */
    uint32_t steps_in_epoch;     /* optimizer steps taken in this epoch */
    uint32_t n_selected;         /* channels selected for this epoch */
    uint32_t samples_in_epoch;
    uint32_t correct_in_epoch;
    float loss_sum;              /* over this epoch's samples */
    float lr;                    /* this epoch's learning rate */
    uint32_t last_epoch_samples; /* statistics of the epoch that ended last */
    uint32_t last_epoch_correct;
    float last_epoch_loss;
    uint32_t reserved[5];
} mdy_state_t;

typedef char mdy_state_is_64_bytes[(sizeof(mdy_state_t) == 64) ? 1 : -1];

typedef struct mdy_model mdy_model_t;

struct mdy_model {
    /* the network: the passes get the model they belong to */
    void (*forward)(const mdy_model_t *model, const float *x); /* writes `logits`; saves the
                                                                   selected candidate inputs;
                                                                   x NULL: input_q8 holds it */
    void (*backward)(const mdy_model_t *model); /* from `dlogits`; accumulates gradients */
    uint32_t input_size;               /* floats per sample */
    /* an int8 backbone whose first ops read the sample (docs/quantization.md §5): it is held
       quantized in the arena, input_size int8 values; NULL otherwise */
    int8_t *input_q8;
    float input_scale;
    int32_t input_zero_point;
    uint16_t classes;
    float *logits;                     /* in the arena */
    float *dlogits;                    /* in the arena */
    /* candidates and their channels */
    uint16_t n_candidates;
    const mdy_candidate_t *candidates;
    uint32_t n_channels;               /* candidate channels, canonical order */
    const uint32_t *channel_costs;     /* bytes per candidate channel (flash) */
    float *pool;                       /* the channel pool */
    uint32_t pool_bytes;
    float *norms, *norm_sums;          /* n_channels each */
    uint32_t *sampler_weights;         /* n_channels */
    uint8_t *in_pool;                  /* n_channels: sampler scratch, then selection flags */
    uint16_t *selected;                /* n_channels: this epoch's channels, canonical order */
    uint32_t *pool_offsets;            /* n_channels: float offset of each selected slot */
    /* the classifier: weights (classes x features) then bias */
    float *classifier;
    const float *classifier_initial;   /* flash */
    float *classifier_grad;
    uint32_t classifier_size;
    /* training settings fixed at compile time */
    uint64_t seed;
    uint32_t epochs, batch_size;
    const float *learning_rates;       /* per epoch (index epoch - 1), computed by the compiler */
    mdy_state_t *state;
};

/* Copy the pre-trained values into RAM, reset the statistics and select epoch 1's channels.
 * Returns MDY_OK or a sampler status (mdy_status.h). */
mdy_status_t mdy_init(const mdy_model_t *model);
/* Train on one sample (x: input_size floats as the network takes them). Returns MDY_OK, or
 * MDY_ERR_LABEL / MDY_ERR_NONFINITE with no weight changed, MDY_ERR_STATE before mdy_init.
 * *loss may be NULL. */
mdy_status_t mdy_train_sample(const mdy_model_t *model, const float *x, int32_t label,
                              float *loss);
/* Apply a pending partial batch, update the norms and select the next epoch's channels. */
mdy_status_t mdy_end_epoch(const mdy_model_t *model);
/* Inference: *label = argmax of the logits. Returns MDY_ERR_NONFINITE on a bad input. */
mdy_status_t mdy_predict(const mdy_model_t *model, const float *x, uint16_t *label);

/* The same on a sample already quantized in model->input_q8 (an int8 backbone), so that an
 * application needs no float buffer of a whole sample: write it with mdy_quantize_input, any
 * number of values at a time, then call these. Both return MDY_ERR_STATE when the model takes
 * no int8 sample (input_q8 is NULL). */
void mdy_quantize_input(const mdy_model_t *model, uint32_t first, uint32_t n, const float *x);
mdy_status_t mdy_train_quantized(const mdy_model_t *model, int32_t label, float *loss);
mdy_status_t mdy_predict_quantized(const mdy_model_t *model, uint16_t *label);

/* How many weights candidate layer `candidate` has: out_c (in_c / groups) k_h k_w. */
uint32_t mdy_candidate_weights(const mdy_candidate_t *candidate);

/* Called by the generated passes for candidate layer `index`: */
void mdy_save_selected_inputs(const mdy_model_t *model, uint16_t index, const float *x);
void mdy_accumulate_selected_gradients(const mdy_model_t *model, uint16_t index,
                                       const float *dy);

/* Called by the generated backward pass after the weight gradient of candidate layer `index`
 * (index n_candidates: after the classifier's): 1 when a channel selected this epoch lies in a
 * lower candidate layer, 0 when nothing below is used and the pass returns. Below that point the
 * pass computes only errors that feed lower candidates' weight gradients, and the norm vector
 * takes only selected channels' gradients (mdy_end_epoch), so stopping changes no result.
 * Built with MDY_FULL_BACKWARD it is always 1: every step runs the whole pass down to the lowest
 * candidate (the behaviour before this check, kept to test and measure it against). */
int mdy_selected_below(const mdy_model_t *model, uint16_t index);

#endif /* MDY_ENGINE_H */
