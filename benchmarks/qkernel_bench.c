/*
 * int8 kernel benchmark firmware (benchmarks/kernel_benchmark.py, section 3, builds and runs it
 * under QEMU -icount, where the SysTick cycle counter counts instructions). Runs the int8
 * frozen-forward calls of the generated qbench_cases.h in graph order (the paper-scale model's
 * int8 prefix: convs, in-place depthwise convs and fused inverted-residual blocks) on
 * deterministic data and prints one line per call over semihosting:
 *   q8 <case> <cycles>
 * with the counter's own cost (two reads back to back) subtracted.
 */
#include <stdint.h>
#include <stdio.h>

#include "cycles.h"
#include "qbench_cases.h"
#include "qblock.h"
#include "qconv.h"
#include "semihosting.h"

static int8_t x[QBENCH_X_BYTES];
static int8_t y[QBENCH_Y_BYTES];
static int8_t w[QBENCH_W_BYTES];
static int8_t scratch[QBENCH_SCRATCH_BYTES];
static int32_t acc[QBENCH_ACC_WORDS];
static int32_t bias[QBENCH_CHANNELS];
static int32_t multiplier[QBENCH_CHANNELS];
static int8_t shift[QBENCH_CHANNELS];
static char line[64];
static uint64_t overhead;

static uint32_t next(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* int8 values in [-127, 127] (weights are symmetric; activations may be any int8). */
static void fill(int8_t *v, uint32_t n, uint32_t seed)
{
    uint32_t i, s = seed;
    for (i = 0; i < n; ++i) {
        v[i] = (int8_t)((int32_t)(next(&s) % 255u) - 127);
    }
}

/* Requantization parameters of a realistic range: multiplier in [2^30, 2^31), shift -6..-9. */
static void fill_params(void)
{
    uint32_t i, s = 99u;
    for (i = 0; i < QBENCH_CHANNELS; ++i) {
        bias[i] = (int32_t)(next(&s) % 20001u) - 10000;
        multiplier[i] = (int32_t)(0x40000000u + (next(&s) << 6));
        shift[i] = (int8_t)(-6 - (int32_t)(next(&s) % 4u));
    }
}

static mdy_q8_conv_t params(const qbench_q_t *q)
{
    mdy_q8_conv_t p;
    p.bias = bias;
    p.multiplier = multiplier;
    p.shift = shift;
    p.in_zero = q->in_zero;
    p.out_zero = q->out_zero;
    p.act_min = q->act_min;
    p.act_max = q->act_max;
    return p;
}

static uint64_t run_case(const qbench_case_t *c)
{
    uint64_t start = 0;
    fill(x, QBENCH_X_BYTES, 1u);
    if (c->kind == QBENCH_CONV) {
        const mdy_q8_conv_t p = params(&c->q[0]);
        start = mdy_cycles_now();
        mdy_q8_conv2d_forward(c->shape[0], &p, x, w, y);
    } else if (c->kind == QBENCH_INPLACE) {
        const mdy_q8_conv_t p = params(&c->q[0]);
        start = mdy_cycles_now();
        mdy_q8_depthwise_inplace_forward(c->shape[0], &p, w, x, scratch);
    } else {
        const mdy_q8_conv_t pe = params(&c->q[0]), pd = params(&c->q[1]), pp = params(&c->q[2]);
        mdy_q8_block_t b;
        b.expand = c->shape[0];
        b.expand_q = &pe;
        b.expand_w = w;
        b.depthwise = c->shape[1];
        b.depthwise_q = &pd;
        b.depthwise_w = w + QBENCH_W_BYTES / 3;
        b.project = c->shape[2];
        b.project_q = &pp;
        b.project_w = w + 2 * (QBENCH_W_BYTES / 3);
        start = mdy_cycles_now();
        mdy_q8_block_forward(&b, x, y, scratch, acc);
    }
    return mdy_cycles_now() - start;
}

int main(void)
{
    uint32_t i;
    uint64_t start;
    mdy_cycles_start();
    start = mdy_cycles_now();
    overhead = mdy_cycles_now() - start;
    fill(w, QBENCH_W_BYTES, 2u);
    fill_params();
    for (i = 0; i < QBENCH_CASES; ++i) {
        const uint64_t spent = run_case(&qbench_cases[i]);
        snprintf(line, sizeof line, "q8 %lu %lu\n", (unsigned long)i,
                 (unsigned long)(spent - overhead));
        mdy_semi_write0(line);
    }
    snprintf(line, sizeof line, "clock %lu\n", (unsigned long)MDY_CPU_HZ);
    mdy_semi_write0(line);
    return 0;
}
