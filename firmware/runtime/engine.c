/* The MeDyate training engine: epoch logic around the generated passes (see engine.h). */
#include "engine.h"

#include <math.h>
#include <string.h>

#include "eltwise.h"
#include "loss.h"
#include "mdy_status.h"
#include "sampler.h"
#include "sgd.h"

#define M (&mdy_model)

/* Lay the selected channels out in the pool, in canonical order, and zero their gradients. */
static void layout_selection(const uint16_t *drawn, uint32_t n_drawn)
{
    uint32_t c, n = 0, offset = 0, j;
    uint16_t layer = 0;
    memset(M->in_pool, 0, M->n_channels);
    for (j = 0; j < n_drawn; ++j) {
        M->in_pool[drawn[j]] = 1;
    }
    for (c = 0; c < M->n_channels; ++c) {
        if (!M->in_pool[c]) {
            continue;
        }
        while (layer + 1u < M->n_candidates && c >= M->candidates[layer + 1u].first_channel) {
            ++layer;
        }
        M->selected[n] = (uint16_t)c;
        M->pool_offsets[n] = offset;
        mdy_zero(M->candidates[layer].weight_units, M->pool + offset);
        offset += M->candidates[layer].weight_units + M->candidates[layer].activation_units;
        ++n;
    }
    M->state->n_selected = n;
}

static int select_channels(void)
{
    mdy_state_t *s = M->state;
    uint32_t n_drawn = 0;
    int status;
    if (M->n_channels == 0) {
        s->n_selected = 0;
        return MDY_OK;
    }
    status = mdy_channel_weights(M->norms, M->n_channels, s->epoch == 1u, M->sampler_weights);
    if (status != MDY_SAMPLER_OK) {
        return MDY_ERR_SAMPLER;
    }
    /* The draw order lands in `selected`; layout_selection rewrites it in canonical order. */
    status = mdy_select_channels(M->seed, s->epoch, M->channel_costs, M->sampler_weights,
                                 M->n_channels, M->pool_bytes, M->in_pool, M->selected,
                                 M->n_channels, &n_drawn);
    if (status != MDY_SAMPLER_OK) {
        return MDY_ERR_SAMPLER;
    }
    layout_selection(M->selected, n_drawn);
    return MDY_OK;
}

static void start_epoch(void)
{
    mdy_state_t *s = M->state;
    uint32_t index = s->epoch <= M->epochs ? s->epoch - 1u : M->epochs - 1u;
    s->lr = M->learning_rates[index];
    s->samples_in_batch = 0;
    s->steps_in_epoch = 0;
    s->samples_in_epoch = 0;
    s->correct_in_epoch = 0;
    s->loss_sum = 0.0f;
    mdy_zero(M->n_channels, M->norm_sums);
}

int mdy_init(void)
{
    mdy_state_t *s = M->state;
    uint16_t l;
    for (l = 0; l < M->n_candidates; ++l) {
        const mdy_candidate_t *cand = &M->candidates[l];
        const mdy_conv_shape_t *sh = cand->shape;
        uint32_t size = (uint32_t)sh->out_c * (uint32_t)(sh->in_c / sh->groups) * sh->k_h * sh->k_w;
        memcpy(cand->weights, cand->initial_weights, size * sizeof(float));
    }
    memcpy(M->classifier, M->classifier_initial, M->classifier_size * sizeof(float));
    mdy_zero(M->classifier_size, M->classifier_grad);
    mdy_zero(M->n_channels, M->norms);
    memset(s, 0, sizeof(*s));
    s->epoch = 1;
    start_epoch();
    return select_channels();
}

/* Candidate layer `index` of the selection: the range of `selected` entries in that layer. */
static void layer_range(uint16_t index, uint32_t *first, uint32_t *last)
{
    const mdy_candidate_t *cand = &M->candidates[index];
    uint32_t begin = cand->first_channel, end = begin + cand->shape->in_c, j = 0;
    uint32_t n = M->state->n_selected;
    while (j < n && M->selected[j] < begin) {
        ++j;
    }
    *first = j;
    while (j < n && M->selected[j] < end) {
        ++j;
    }
    *last = j;
}

void mdy_save_selected_inputs(uint16_t index, const float *x)
{
    const mdy_candidate_t *cand = &M->candidates[index];
    uint32_t first, last, j;
    layer_range(index, &first, &last);
    for (j = first; j < last; ++j) {
        uint32_t channel = M->selected[j] - cand->first_channel;
        memcpy(M->pool + M->pool_offsets[j] + cand->weight_units,
               x + channel * cand->activation_units, cand->activation_units * sizeof(float));
    }
}

void mdy_accumulate_selected_gradients(uint16_t index, const float *dy)
{
    const mdy_candidate_t *cand = &M->candidates[index];
    uint32_t first, last, j;
    layer_range(index, &first, &last);
    for (j = first; j < last; ++j) {
        float *slot = M->pool + M->pool_offsets[j];
        mdy_conv2d_backward_weight_channel(cand->shape, dy, slot + cand->weight_units,
                                           (uint16_t)(M->selected[j] - cand->first_channel),
                                           slot);
    }
}

/* Average the accumulated gradients over the batch, apply SGD, record the slice norms. */
static void apply_update(void)
{
    mdy_state_t *s = M->state;
    uint32_t n = s->samples_in_batch, j;
    float scale;
    uint16_t layer = 0;
    if (n == 0) {
        return;
    }
    scale = s->lr / (float)n;
    for (j = 0; j < s->n_selected; ++j) {
        uint32_t c = M->selected[j];
        const mdy_candidate_t *cand;
        const mdy_conv_shape_t *sh;
        float *grad = M->pool + M->pool_offsets[j];
        uint32_t in_per_group, per_group_out, local, group, taps, o, t;
        while (layer + 1u < M->n_candidates && c >= M->candidates[layer + 1u].first_channel) {
            ++layer;
        }
        cand = &M->candidates[layer];
        sh = cand->shape;
        in_per_group = sh->in_c / sh->groups;
        per_group_out = sh->out_c / sh->groups;
        local = (c - cand->first_channel) % in_per_group;
        group = (c - cand->first_channel) / in_per_group;
        taps = (uint32_t)sh->k_h * sh->k_w;
        M->norm_sums[c] += sqrtf(mdy_sum_squares(cand->weight_units, grad)) / (float)n;
        for (o = 0; o < per_group_out; ++o) {
            float *w = cand->weights + ((group * per_group_out + o) * in_per_group + local) * taps;
            for (t = 0; t < taps; ++t) {
                w[t] -= scale * grad[o * taps + t];
            }
        }
        mdy_zero(cand->weight_units, grad);
    }
    mdy_sgd_step(M->classifier_size, M->classifier, M->classifier_grad, scale);
    mdy_zero(M->classifier_size, M->classifier_grad);
    s->samples_in_batch = 0;
    s->steps_in_epoch += 1;
}

int mdy_train_sample(const float *x, int32_t label, float *loss)
{
    mdy_state_t *s = M->state;
    float sample_loss = 0.0f;
    int status;
    if (s->epoch == 0) {
        return MDY_ERR_STATE;
    }
    if (label < 0 || label >= (int32_t)M->classes) {
        return MDY_ERR_LABEL;
    }
    if (!mdy_all_finite(M->input_size, x)) {
        return MDY_ERR_NONFINITE;
    }
    M->forward(x);
    status = mdy_softmax_xent(M->classes, M->logits, label, M->dlogits, &sample_loss);
    if (status != MDY_OK) {
        return status;  /* nothing accumulated: the weights are untouched */
    }
    if (mdy_argmax(M->classes, M->logits) == (uint16_t)label) {
        s->correct_in_epoch += 1;
    }
    M->backward();
    s->loss_sum += sample_loss;
    s->samples_in_epoch += 1;
    s->samples_in_batch += 1;
    if (s->samples_in_batch == M->batch_size) {
        apply_update();
    }
    if (loss) {
        *loss = sample_loss;
    }
    return MDY_OK;
}

int mdy_end_epoch(void)
{
    mdy_state_t *s = M->state;
    uint32_t j;
    if (s->epoch == 0) {
        return MDY_ERR_STATE;
    }
    apply_update();
    if (s->steps_in_epoch > 0 && s->n_selected > 0) {
        float steps = (float)s->steps_in_epoch, best = 0.0f;
        for (j = 0; j < s->n_selected; ++j) {
            uint32_t c = M->selected[j];
            M->norms[c] = M->norm_sums[c] / steps;
            best = M->norms[c] > best ? M->norms[c] : best;
        }
        if (s->epoch == 1u) {  /* optimistic exploration: unseen channels get the largest norm */
            for (j = 0; j < M->n_channels; ++j) {
                if (!M->in_pool[j]) {
                    M->norms[j] = best;
                }
            }
        }
    }
    s->last_epoch_samples = s->samples_in_epoch;
    s->last_epoch_correct = s->correct_in_epoch;
    s->last_epoch_loss = s->samples_in_epoch ? s->loss_sum / (float)s->samples_in_epoch : 0.0f;
    s->epoch += 1;
    start_epoch();
    return select_channels();
}

int mdy_predict(const float *x, uint16_t *label)
{
    if (!mdy_all_finite(M->input_size, x)) {
        return MDY_ERR_NONFINITE;
    }
    M->forward(x);
    if (!mdy_all_finite(M->classes, M->logits)) {
        return MDY_ERR_NONFINITE;
    }
    *label = mdy_argmax(M->classes, M->logits);
    return MDY_OK;
}
