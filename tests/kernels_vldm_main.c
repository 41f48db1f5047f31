/*
 * Firmware of tests/test_kernels_vldm.py: runs the float conv cases of the generated
 * vldm_cases.h (mdy_conv2d_forward: pointwise and stem shapes, whose Cortex-M builds load by
 * VLDM) and prints every output float's bit pattern over semihosting as hex lines
 *   y <case> <up to 8 words of 8 hex digits>
 * then "guard <case>" when the kernel wrote outside its output, and "done".
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conv.h"
#include "semihosting.h"
#include "vldm_cases.h"

#define GUARD 4u
#define GUARD_WORD 0x7fc0dead

static float x_buf[VLDM_X_WORDS], w_buf[VLDM_W_WORDS], b_buf[VLDM_B_WORDS];
static uint32_t y_buf[VLDM_Y_WORDS + 2u * GUARD];
static char line[96];

int main(void)
{
    uint32_t c, i, j;
    for (c = 0; c < VLDM_CASES; ++c) {
        const vldm_case_t *k = &vldm_cases[c];
        int ok = 1;
        memcpy(x_buf, k->x, k->x_words * sizeof(float));
        memcpy(w_buf, k->w, k->w_words * sizeof(float));
        memcpy(b_buf, k->b, k->b_words * sizeof(float));
        for (i = 0; i < k->y_words + 2u * GUARD; ++i) {
            y_buf[i] = GUARD_WORD;
        }
        mdy_conv2d_forward(k->shape, x_buf, w_buf, k->b_words ? b_buf : NULL,
                           (float *)(void *)(y_buf + GUARD));
        for (i = 0; i < GUARD; ++i) {
            ok &= y_buf[i] == GUARD_WORD && y_buf[GUARD + k->y_words + i] == GUARD_WORD;
        }
        for (i = 0; i < k->y_words; i += 8u) {
            int at = snprintf(line, sizeof line, "y %lu", (unsigned long)c);
            for (j = i; j < k->y_words && j < i + 8u; ++j) {
                at += snprintf(line + at, sizeof line - (size_t)at, " %08lx",
                               (unsigned long)y_buf[GUARD + j]);
            }
            snprintf(line + at, sizeof line - (size_t)at, "\n");
            mdy_semi_write0(line);
        }
        if (!ok) {
            snprintf(line, sizeof line, "guard %lu\n", (unsigned long)c);
            mdy_semi_write0(line);
        }
    }
    mdy_semi_write0("done\n");
    return 0;
}
