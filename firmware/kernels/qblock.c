/*
 * The channel-at-a-time inverted-residual block and the in-place depthwise conv (qblock.h).
 * Every expand and depthwise channel goes through mdy_q8_conv2d_forward on a one-channel shape
 * with the params of that channel, so those bytes are the layer-by-layer ones by construction.
 * With the DSP extension the projection folds its zero point into the accumulators' start and
 * adds four pixels' d * w per word of d (SXTB16, SMLABB/SMLATB; qdsp.h).
 */
#include "qblock.h"

#include <stddef.h>

#include "qdsp.h"
#include "quant.h"

/* The params of output channel c alone: per-channel arrays offset by c. */
static mdy_q8_conv_t channel_params(const mdy_q8_conv_t *p, int32_t c)
{
    mdy_q8_conv_t one = *p;
    one.bias = p->bias != NULL ? p->bias + c : NULL;
    one.multiplier = p->multiplier + c;
    one.shift = p->shift + c;
    return one;
}

/* The depthwise shape s restricted to one channel. */
static mdy_conv_shape_t one_channel(const mdy_conv_shape_t *s)
{
    mdy_conv_shape_t one = *s;
    one.in_c = 1;
    one.out_c = 1;
    one.groups = 1;
    return one;
}

static int32_t map_cells(const mdy_conv_shape_t *s)
{
    return (int32_t)s->out_h * (int32_t)s->out_w;
}

uint32_t mdy_q8_block_scratch_bytes(const mdy_q8_block_t *b)
{
    const int32_t expand = b->expand != NULL ? map_cells(b->expand) : 0;
    return (uint32_t)(expand + map_cells(b->depthwise));
}

uint32_t mdy_q8_block_acc_words(const mdy_q8_block_t *b)
{
    return (uint32_t)b->project->out_c * (uint32_t)map_cells(b->project);
}

/*
 * No accumulator leaves int32: acc[o][p] holds bias[o] plus some of the terms
 * (d - in_zero) * w[o][e], each at most 255 * 127 in magnitude (d and in_zero are int8, w in
 * [-127, 127]), so every partial sum is bounded by |bias| + 255 * 127 * hidden, which is the
 * bound the compiler checks for the project conv (qconv.h) and is below 2^31. Integer sums
 * being exact, the final acc equals the layer-by-layer one whatever the order.
 */
/* The project conv's input zero point: the depthwise's output zero point. */
static int32_t project_zero(const mdy_q8_block_t *b)
{
    return b->project_q->in_zero;
}

static void project_accumulate(const mdy_q8_block_t *b, int32_t e, const int8_t *d,
                               int32_t *acc)
{
    const mdy_conv_shape_t *s = b->project;
    const int32_t hw = map_cells(s), hidden = s->in_c;
    int32_t o, i;
    for (o = 0; o < s->out_c; ++o) {
        const int32_t w = b->project_w[o * hidden + e];
        int32_t *acc_o = acc + o * hw;
        if (w == 0) {
            continue;
        }
#if defined(__ARM_FEATURE_DSP)
        /* the zero point's share is in the accumulators' start (project_start) */
        for (i = 0; i + 4 <= hw; i += 4) {
            const int32_t u = mdy_dsp_load4(d + i);
            const int32_t u02 = mdy_dsp_even(u), u13 = mdy_dsp_odd(u);
            int32_t a0, a1, a2, a3;
            mdy_dsp_load_pair(acc_o + i, &a0, &a1);
            mdy_dsp_load_pair(acc_o + i + 2, &a2, &a3);
            mdy_dsp_store_pair(acc_o + i, __smlabb(u02, w, a0), __smlabb(u13, w, a1));
            mdy_dsp_store_pair(acc_o + i + 2, __smlatb(u02, w, a2), __smlatb(u13, w, a3));
        }
        for (; i < hw; ++i) {
            acc_o[i] = __smlabb(d[i], w, acc_o[i]);
        }
#else
        for (i = 0; i < hw; ++i) {
            acc_o[i] += (d[i] - project_zero(b)) * w;
        }
#endif
    }
}

/* Output channel o's accumulators' start: its bias; with the DSP extension also the zero
   point's share, -in_zero * sum_e w[o][e] (SMLAxy wraps modulo 2^32, so a partial sum past
   int32 cannot change the exact final value, bounded as above). */
static int32_t project_start(const mdy_q8_block_t *b, int32_t o)
{
    const mdy_q8_conv_t *pq = b->project_q;
    int32_t start = pq->bias != NULL ? pq->bias[o] : 0;
#if defined(__ARM_FEATURE_DSP)
    const int32_t hidden = b->project->in_c, z = project_zero(b);
    int32_t e;
    for (e = 0; e < hidden; ++e) {
        start -= z * b->project_w[o * hidden + e];
    }
#endif
    return start;
}

void mdy_q8_block_forward(const mdy_q8_block_t *b, const int8_t *x, int8_t *y,
                          int8_t *scratch, int32_t *acc)
{
    const mdy_conv_shape_t *ps = b->project;
    const mdy_q8_conv_t *pq = b->project_q;
    const mdy_conv_shape_t dw_one = one_channel(b->depthwise);
    const int32_t hw = map_cells(ps), hidden = b->depthwise->out_c;
    const int32_t dw_in_hw = (int32_t)dw_one.in_h * (int32_t)dw_one.in_w;
    const int32_t k_hw = (int32_t)dw_one.k_h * (int32_t)dw_one.k_w;
    int8_t *expanded = scratch;
    int8_t *d = scratch + (b->expand != NULL ? map_cells(b->expand) : 0);
    mdy_conv_shape_t ex_one = dw_one;  /* the expand's shape with one output channel */
    int32_t o, e, i;

    if (b->expand != NULL) {
        ex_one = *b->expand;
        ex_one.out_c = 1;
    }
    for (o = 0; o < ps->out_c; ++o) {
        const int32_t start = project_start(b, o);
        for (i = 0; i < hw; ++i) {
            acc[o * hw + i] = start;
        }
    }
    for (e = 0; e < hidden; ++e) {
        const mdy_q8_conv_t dq = channel_params(b->depthwise_q, e);
        const int8_t *dw_in = x + e * dw_in_hw;  /* no expansion: the block input's channel */
        if (b->expand != NULL) {
            const mdy_q8_conv_t eq = channel_params(b->expand_q, e);
            mdy_q8_conv2d_forward(&ex_one, &eq, x, b->expand_w + e * (int32_t)ex_one.in_c,
                                  expanded);
            dw_in = expanded;
        }
        mdy_q8_conv2d_forward(&dw_one, &dq, dw_in, b->depthwise_w + e * k_hw, d);
        project_accumulate(b, e, d, acc);
    }
    /* in increasing order, so that y may start at acc: byte j of y lands in acc[j / 4], read
       already (j / 4 <= j) */
    for (o = 0; o < ps->out_c; ++o) {
        const mdy_q8_requant_t rq = mdy_q8_conv_requant(pq, o);
        for (i = 0; i < hw; ++i) {
            y[o * hw + i] = mdy_q8_requant_apply(&rq, acc[o * hw + i]);
        }
    }
}

void mdy_q8_depthwise_inplace_forward(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p,
                                      const int8_t *w, int8_t *xy, int8_t *scratch)
{
    const mdy_conv_shape_t one = one_channel(s);
    const int32_t in_hw = (int32_t)s->in_h * (int32_t)s->in_w, out_hw = map_cells(s);
    const int32_t k_hw = (int32_t)s->k_h * (int32_t)s->k_w;
    int32_t c, i;
    for (c = 0; c < s->out_c; ++c) {
        const mdy_q8_conv_t q = channel_params(p, c);
        const int8_t *x_c = xy + c * in_hw;
        for (i = 0; i < in_hw; ++i) {
            scratch[i] = x_c[i];
        }
        /* writes bytes [c * out_hw, (c + 1) * out_hw), within input channels <= c */
        mdy_q8_conv2d_forward(&one, &q, scratch, w + c * k_hw, xy + c * out_hw);
    }
}
