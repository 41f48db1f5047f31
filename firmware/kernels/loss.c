/* Softmax cross-entropy and argmax (see loss.h). */
#include "loss.h"

#include <math.h>

#include "mdy_math.h"

mdy_status_t mdy_softmax_xent(uint16_t n, const float *logits, int32_t label, float *dlogits,
                              float *loss)
{
    uint32_t i;
    float max, sum = 0.0f, z_label;

    if (label < 0 || label >= (int32_t)n) {
        return MDY_ERR_LABEL;
    }
    max = logits[0];
    for (i = 0; i < n; ++i) {
        if (!isfinite(logits[i])) {
            return MDY_ERR_NONFINITE;
        }
        if (logits[i] > max) {
            max = logits[i];
        }
    }
    z_label = logits[label] - max;  /* read before dlogits (which may be logits) is written */

    /* exp(z - max) <= 1 cannot overflow, and the max term is 1 so sum >= 1. The engine's own
     * exp and log (mdy_math.h): the same bits on the host and on Cortex-M. */
    for (i = 0; i < n; ++i) {
        dlogits[i] = mdy_expf(logits[i] - max);
        sum += dlogits[i];
    }
    for (i = 0; i < n; ++i) {
        dlogits[i] /= sum;
    }
    dlogits[label] -= 1.0f;
    /* -log(exp(z_label) / sum) */
    *loss = mdy_logf(sum) - z_label;
    return MDY_OK;
}

uint16_t mdy_argmax(uint16_t n, const float *logits)
{
    uint16_t i, best = 0;
    for (i = 1; i < n; ++i) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}
