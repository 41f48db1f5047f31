/* Softmax cross-entropy loss of one sample and the prediction (argmax) of the classifier. */
#ifndef MDY_LOSS_H
#define MDY_LOSS_H

#include <stdint.h>

#include "mdy_status.h"

/*
 * Softmax cross-entropy of one sample over n classes:
 *   *loss = -log softmax(logits)[label];  dlogits = softmax(logits) - onehot(label).
 * Numerically stable (the max logit is subtracted before exp). dlogits may equal logits.
 * Returns MDY_ERR_LABEL when label < 0 or label >= n, MDY_ERR_NONFINITE when a logit is NaN
 * or infinite (in both cases nothing is written), else MDY_OK.
 */
mdy_status_t mdy_softmax_xent(uint16_t n, const float *logits, int32_t label, float *dlogits,
                              float *loss);

/* Index of the largest logit (the first one on ties; NaNs are ignored); 0 when n is 0. */
uint16_t mdy_argmax(uint16_t n, const float *logits);

#endif /* MDY_LOSS_H */
