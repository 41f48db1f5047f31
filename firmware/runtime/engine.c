/* The MeDyate training engine: epoch logic around the generated passes (see engine.h). */
#include "engine.h"

#include <math.h>
#include <string.h>

#include "eltwise.h"
#include "loss.h"
#include "quant.h"
#include "sampler.h"
#include "sgd.h"

/* The candidate layer of canonical channel c, searching on from `layer`. */
static uint16_t layer_of(const mdy_model_t *model, uint32_t c, uint16_t layer)
{
    while (layer + 1u < model->n_candidates && c >= model->candidates[layer + 1u].first_channel) {
        ++layer;
    }
    return layer;
}

/* Lay the selected channels out in the pool, in canonical order, and zero their gradients. */
static void layout_selection(const mdy_model_t *model, const uint16_t *drawn, uint32_t n_drawn)
{
    uint32_t c, n = 0, offset = 0, j;
    uint16_t layer = 0;
    memset(model->in_pool, 0, model->n_channels);
    for (j = 0; j < n_drawn; ++j) {
        model->in_pool[drawn[j]] = 1;
    }
    for (c = 0; c < model->n_channels; ++c) {
        if (!model->in_pool[c]) {
            continue;
        }
        layer = layer_of(model, c, layer);
        model->selected[n] = (uint16_t)c;
        model->pool_offsets[n] = offset;
        mdy_zero(model->candidates[layer].weight_units, model->pool + offset);
        offset += model->candidates[layer].weight_units + model->candidates[layer].activation_units;
        ++n;
    }
    model->state->n_selected = n;
}

static mdy_status_t select_channels(const mdy_model_t *model)
{
    mdy_state_t *s = model->state;
    uint32_t n_drawn = 0;
    mdy_status_t status;
    if (model->n_channels == 0) {
        s->n_selected = 0;
        return MDY_OK;
    }
    status = mdy_channel_weights(model->norms, model->n_channels, s->epoch == 1u,
                                 model->sampler_weights);
    if (status != MDY_OK) {
        return status;
    }
    /* The draw order lands in `selected`; layout_selection rewrites it in canonical order. */
    status = mdy_select_channels(model->seed, s->epoch, model->channel_costs,
                                 model->sampler_weights, model->n_channels, model->pool_bytes,
                                 model->in_pool, model->selected, model->n_channels, &n_drawn);
    if (status != MDY_OK) {
        return status;
    }
    layout_selection(model, model->selected, n_drawn);
    return MDY_OK;
}

static void start_epoch(const mdy_model_t *model)
{
    mdy_state_t *s = model->state;
    uint32_t index = s->epoch <= model->epochs ? s->epoch - 1u : model->epochs - 1u;
    s->lr = model->learning_rates[index];
    s->samples_in_batch = 0;
    s->steps_in_epoch = 0;
    s->samples_in_epoch = 0;
    s->correct_in_epoch = 0;
    s->loss_sum = 0.0f;
    mdy_zero(model->n_channels, model->norm_sums);
}

uint32_t mdy_candidate_weights(const mdy_candidate_t *candidate)
{
    const mdy_conv_shape_t *sh = candidate->shape;
    return (uint32_t)sh->out_c * (uint32_t)(sh->in_c / sh->groups) * sh->k_h * sh->k_w;
}

/* A candidate's pre-trained weights into its RAM copy: copied, or dequantized from int8
 * (docs/quantization.md §5: w = scale[o] * q, the value the reference starts from). */
static void load_candidate(const mdy_candidate_t *cand)
{
    uint32_t n = mdy_candidate_weights(cand), per_output, i;
    if (cand->initial_q8 == NULL) {
        memcpy(cand->weights, cand->initial_weights, n * sizeof(float));
        return;
    }
    per_output = n / cand->shape->out_c;
    for (i = 0; i < n; ++i) {
        cand->weights[i] = cand->initial_scales[i / per_output] * (float)cand->initial_q8[i];
    }
}

mdy_status_t mdy_init(const mdy_model_t *model)
{
    mdy_state_t *s = model->state;
    uint16_t l;
    for (l = 0; l < model->n_candidates; ++l) {
        load_candidate(&model->candidates[l]);
    }
    memcpy(model->classifier, model->classifier_initial, model->classifier_size * sizeof(float));
    mdy_zero(model->classifier_size, model->classifier_grad);
    mdy_zero(model->n_channels, model->norms);
    memset(s, 0, sizeof(*s));
    s->epoch = 1;
    start_epoch(model);
    return select_channels(model);
}

/* Candidate layer `index` of the selection: the range of `selected` entries in that layer. */
static void layer_range(const mdy_model_t *model, uint16_t index, uint32_t *first,
                        uint32_t *last)
{
    const mdy_candidate_t *cand = &model->candidates[index];
    uint32_t begin = cand->first_channel, end = begin + cand->shape->in_c, j = 0;
    uint32_t n = model->state->n_selected;
    while (j < n && model->selected[j] < begin) {
        ++j;
    }
    *first = j;
    while (j < n && model->selected[j] < end) {
        ++j;
    }
    *last = j;
}

void mdy_save_selected_inputs(const mdy_model_t *model, uint16_t index, const float *x)
{
    const mdy_candidate_t *cand = &model->candidates[index];
    uint32_t first, last, j;
    layer_range(model, index, &first, &last);
    for (j = first; j < last; ++j) {
        uint32_t channel = model->selected[j] - cand->first_channel;
        memcpy(model->pool + model->pool_offsets[j] + cand->weight_units,
               x + channel * cand->activation_units, cand->activation_units * sizeof(float));
    }
}

void mdy_accumulate_selected_gradients(const mdy_model_t *model, uint16_t index,
                                       const float *dy)
{
    const mdy_candidate_t *cand = &model->candidates[index];
    uint32_t first, last;
    layer_range(model, index, &first, &last);
    mdy_conv2d_backward_weight_channels(cand->shape, dy, last - first, model->selected + first,
                                        cand->first_channel, model->pool,
                                        model->pool_offsets + first, cand->weight_units);
}

int mdy_selected_below(const mdy_model_t *model, uint16_t index)
{
#ifdef MDY_FULL_BACKWARD
    (void)model;
    (void)index;
    return 1;
#else
    /* `selected` is in canonical order (layer, then channel): its first entry is the lowest. */
    uint32_t boundary = index < model->n_candidates ? model->candidates[index].first_channel
                                                    : model->n_channels;
    return model->state->n_selected > 0u && model->selected[0] < boundary;
#endif
}

/* Average the accumulated gradients over the batch, apply SGD, record the slice norms. */
static void apply_update(const mdy_model_t *model)
{
    mdy_state_t *s = model->state;
    uint32_t n = s->samples_in_batch, j;
    float scale;
    uint16_t layer = 0;
    if (n == 0) {
        return;
    }
    scale = s->lr / (float)n;
    for (j = 0; j < s->n_selected; ++j) {
        uint32_t c = model->selected[j];
        const mdy_candidate_t *cand;
        const mdy_conv_shape_t *sh;
        float *grad = model->pool + model->pool_offsets[j];
        uint32_t in_per_group, per_group_out, local, group, taps, o, t;
        layer = layer_of(model, c, layer);
        cand = &model->candidates[layer];
        sh = cand->shape;
        in_per_group = sh->in_c / sh->groups;
        per_group_out = sh->out_c / sh->groups;
        local = (c - cand->first_channel) % in_per_group;
        group = (c - cand->first_channel) / in_per_group;
        taps = (uint32_t)sh->k_h * sh->k_w;
        model->norm_sums[c] += sqrtf(mdy_sum_squares(cand->weight_units, grad)) / (float)n;
        for (o = 0; o < per_group_out; ++o) {
            float *w = cand->weights + ((group * per_group_out + o) * in_per_group + local) * taps;
            for (t = 0; t < taps; ++t) {
                w[t] -= scale * grad[o * taps + t];
            }
        }
        mdy_zero(cand->weight_units, grad);
    }
    mdy_sgd_step(model->classifier_size, model->classifier, model->classifier_grad, scale);
    mdy_zero(model->classifier_size, model->classifier_grad);
    s->samples_in_batch = 0;
    s->steps_in_epoch += 1;
}

/* One training step on x (NULL: the sample in input_q8), the checks done. */
static mdy_status_t train_step(const mdy_model_t *model, const float *x, int32_t label,
                               float *loss)
{
    mdy_state_t *s = model->state;
    float sample_loss = 0.0f;
    mdy_status_t status;
    model->forward(model, x);
    status = mdy_softmax_xent(model->classes, model->logits, label, model->dlogits, &sample_loss);
    if (status != MDY_OK) {
        return status;  /* nothing accumulated: the weights are untouched */
    }
    if (mdy_argmax(model->classes, model->logits) == (uint16_t)label) {
        s->correct_in_epoch += 1;
    }
    model->backward(model);
    s->loss_sum += sample_loss;
    s->samples_in_epoch += 1;
    s->samples_in_batch += 1;
    if (s->samples_in_batch == model->batch_size) {
        apply_update(model);
    }
    if (loss) {
        *loss = sample_loss;
    }
    return MDY_OK;
}

static mdy_status_t check_step(const mdy_model_t *model, int32_t label)
{
    if (model->state->epoch == 0) {
        return MDY_ERR_STATE;
    }
    if (label < 0 || label >= (int32_t)model->classes) {
        return MDY_ERR_LABEL;
    }
    return MDY_OK;
}

mdy_status_t mdy_train_sample(const mdy_model_t *model, const float *x, int32_t label,
                              float *loss)
{
    mdy_status_t status = check_step(model, label);
    if (status != MDY_OK) {
        return status;
    }
    if (!mdy_all_finite(model->input_size, x)) {
        return MDY_ERR_NONFINITE;
    }
    return train_step(model, x, label, loss);
}

void mdy_quantize_input(const mdy_model_t *model, uint32_t first, uint32_t n, const float *x)
{
    if (model->input_q8 != NULL && first <= model->input_size
        && n <= model->input_size - first) {
        mdy_quantize(n, x, model->input_scale, model->input_zero_point, model->input_q8 + first);
    }
}

mdy_status_t mdy_train_quantized(const mdy_model_t *model, int32_t label, float *loss)
{
    mdy_status_t status = check_step(model, label);
    if (status != MDY_OK) {
        return status;
    }
    if (model->input_q8 == NULL) {
        return MDY_ERR_STATE;
    }
    return train_step(model, NULL, label, loss);
}

mdy_status_t mdy_end_epoch(const mdy_model_t *model)
{
    mdy_state_t *s = model->state;
    uint32_t j;
    if (s->epoch == 0) {
        return MDY_ERR_STATE;
    }
    apply_update(model);
    if (s->steps_in_epoch > 0 && s->n_selected > 0) {
        float steps = (float)s->steps_in_epoch, best = 0.0f;
        for (j = 0; j < s->n_selected; ++j) {
            uint32_t c = model->selected[j];
            model->norms[c] = model->norm_sums[c] / steps;
            best = model->norms[c] > best ? model->norms[c] : best;
        }
        if (s->epoch == 1u) {  /* optimistic exploration: unseen channels get the largest norm */
            for (j = 0; j < model->n_channels; ++j) {
                if (!model->in_pool[j]) {
                    model->norms[j] = best;
                }
            }
        }
    }
    s->last_epoch_samples = s->samples_in_epoch;
    s->last_epoch_correct = s->correct_in_epoch;
    s->last_epoch_loss = s->samples_in_epoch ? s->loss_sum / (float)s->samples_in_epoch : 0.0f;
    s->epoch += 1;
    start_epoch(model);
    return select_channels(model);
}

/* The forward pass on x (NULL: input_q8) and the prediction. */
static mdy_status_t predict(const mdy_model_t *model, const float *x, uint16_t *label)
{
    model->forward(model, x);
    if (!mdy_all_finite(model->classes, model->logits)) {
        return MDY_ERR_NONFINITE;
    }
    *label = mdy_argmax(model->classes, model->logits);
    return MDY_OK;
}

mdy_status_t mdy_predict(const mdy_model_t *model, const float *x, uint16_t *label)
{
    if (!mdy_all_finite(model->input_size, x)) {
        return MDY_ERR_NONFINITE;
    }
    return predict(model, x, label);
}

mdy_status_t mdy_predict_quantized(const mdy_model_t *model, uint16_t *label)
{
    if (model->input_q8 == NULL) {
        return MDY_ERR_STATE;
    }
    return predict(model, NULL, label);
}
