/*
 * The runtime's one status type, returned by everything that can fail: the kernels (today only
 * mdy_softmax_xent), the channel sampler, the engine (engine.h). Kernels that cannot fail return
 * void; shapes are validated by the compiler when it generates the engine, not again on the
 * device. 0 is success, every error is negative; the serial protocol carries the value as the
 * ERROR frame's engine status (protocol.h). Python reads this enum from this file
 * (medyate_mcu/codegen/c_interface.py): keep each value a plain integer literal.
 */
#ifndef MDY_STATUS_H
#define MDY_STATUS_H

typedef enum {
    MDY_OK = 0,                 /* success */
    MDY_ERR_LABEL = -1,         /* class label out of range */
    MDY_ERR_NONFINITE = -2,     /* a NaN or infinite value was seen */
    MDY_ERR_STATE = -3,         /* called in the wrong state (e.g. before mdy_init) */
    MDY_ERR_NULL = -4,          /* sampler: a required pointer is NULL */
    MDY_ERR_BAD_NORM = -5,      /* sampler: a norm is NaN, infinite or negative (corrupted state) */
    MDY_ERR_BAD_WEIGHT = -6,    /* sampler: a weight is 0 (weights are >= 1) */
    MDY_ERR_BAD_EPOCH = -7,     /* sampler: epoch 0 (epochs are numbered from 1) */
    MDY_ERR_TOO_MANY = -8,      /* sampler: n > MDY_SAMPLER_MAX_CHANNELS */
    MDY_ERR_CAPACITY = -9       /* sampler: more channels selected than the output holds */
} mdy_status_t;

/* A one-line description of a status. */
const char *mdy_status_message(mdy_status_t status);

#endif /* MDY_STATUS_H */
