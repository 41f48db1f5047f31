/*
 * Firmware of tests/test_qkernels_dsp.py: runs the int8 kernels' cases of the generated
 * qdsp_cases.h (convs, in-place depthwise convs, fused blocks) on the Cortex-M, where the DSP
 * paths are compiled, and prints every output byte over semihosting as hex lines
 *   y <case> <hex of up to 32 bytes>
 * then "guard <case>" when a kernel wrote outside its buffers, and "done".
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "qblock.h"
#include "qconv.h"
#include "qdsp_cases.h"
#include "semihosting.h"

#define GUARD 8
#define GUARD_VALUE 0x5A

static int8_t y_buf[DSP_Y_BYTES + 2 * GUARD];
static int8_t xy_buf[DSP_X_BYTES + 2 * GUARD];
static int8_t scratch_buf[DSP_SCRATCH_BYTES + 2 * GUARD];
static int32_t acc_buf[DSP_ACC_WORDS + 2 * GUARD];
static char line[80];

static int guards_ok(const int8_t *b, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < GUARD; ++i) {
        if (b[i] != GUARD_VALUE || b[GUARD + n + i] != GUARD_VALUE) {
            return 0;
        }
    }
    return 1;
}

static int acc_guards_ok(uint32_t words)
{
    uint32_t i;
    for (i = 0; i < GUARD; ++i) {
        if (acc_buf[i] != 0x5A5A5A5A || acc_buf[GUARD + words + i] != 0x5A5A5A5A) {
            return 0;
        }
    }
    return 1;
}

static void print_bytes(uint32_t index, const int8_t *v, uint32_t n)
{
    static const char digits[] = "0123456789abcdef";
    uint32_t i, j;
    for (i = 0; i < n; i += 32) {
        int at = snprintf(line, sizeof line, "y %lu ", (unsigned long)index);
        for (j = i; j < n && j < i + 32; ++j) {
            const uint8_t b = (uint8_t)v[j];
            line[at++] = digits[b >> 4];
            line[at++] = digits[b & 15u];
        }
        line[at++] = '\n';
        line[at] = '\0';
        mdy_semi_write0(line);
    }
}

static void run_case(uint32_t index, const dsp_case_t *c)
{
    const int8_t *out = y_buf + GUARD;
    int ok = 1;
    memset(y_buf, GUARD_VALUE, sizeof y_buf);
    memset(xy_buf, GUARD_VALUE, sizeof xy_buf);
    memset(scratch_buf, GUARD_VALUE, sizeof scratch_buf);
    memset(acc_buf, GUARD_VALUE, sizeof acc_buf);
    if (c->kind == DSP_CONV) {
        mdy_q8_conv2d_forward(c->shape[0], c->q[0], c->x, c->w[0], y_buf + GUARD);
        ok = guards_ok(y_buf, c->y_bytes);
    } else if (c->kind == DSP_INPLACE) {
        memcpy(xy_buf + GUARD, c->x, c->x_bytes);
        mdy_q8_depthwise_inplace_forward(c->shape[0], c->q[0], c->w[0], xy_buf + GUARD,
                                         scratch_buf + GUARD);
        out = xy_buf + GUARD;
        ok = guards_ok(xy_buf, c->x_bytes)
             && guards_ok(scratch_buf, (uint32_t)c->shape[0]->in_h * c->shape[0]->in_w);
    } else {
        mdy_q8_block_t b;
        b.expand = c->shape[0];
        b.expand_q = c->q[0];
        b.expand_w = c->w[0];
        b.depthwise = c->shape[1];
        b.depthwise_q = c->q[1];
        b.depthwise_w = c->w[1];
        b.project = c->shape[2];
        b.project_q = c->q[2];
        b.project_w = c->w[2];
        mdy_q8_block_forward(&b, c->x, y_buf + GUARD, scratch_buf + GUARD, acc_buf + GUARD);
        ok = guards_ok(y_buf, c->y_bytes)
             && guards_ok(scratch_buf, mdy_q8_block_scratch_bytes(&b))
             && acc_guards_ok(mdy_q8_block_acc_words(&b));
    }
    print_bytes(index, out, c->y_bytes);
    if (!ok) {
        snprintf(line, sizeof line, "guard %lu\n", (unsigned long)index);
        mdy_semi_write0(line);
    }
}

int main(void)
{
    uint32_t i;
    for (i = 0; i < DSP_CASES; ++i) {
        run_case(i, &dsp_cases[i]);
    }
    mdy_semi_write0("done\n");
    return 0;
}
