/* Descriptions of the runtime's status codes (see mdy_status.h). */
#include "mdy_status.h"

const char *mdy_status_message(mdy_status_t status)
{
    switch (status) {
    case MDY_OK: return "ok";
    case MDY_ERR_LABEL: return "label out of range";
    case MDY_ERR_NONFINITE: return "non-finite value in the input or the loss";
    case MDY_ERR_STATE: return "the engine is not initialised";
    case MDY_ERR_NULL: return "sampler: a required buffer is NULL";
    case MDY_ERR_BAD_NORM:
        return "sampler: a norm is NaN, infinite or negative (corrupted norm vector)";
    case MDY_ERR_BAD_WEIGHT: return "sampler: a channel weight is 0 (weights are at least 1)";
    case MDY_ERR_BAD_EPOCH: return "sampler: epoch 0 (epochs are numbered from 1)";
    case MDY_ERR_TOO_MANY: return "sampler: more candidate channels than MDY_SAMPLER_MAX_CHANNELS";
    case MDY_ERR_CAPACITY: return "sampler: more channels selected than the output buffer holds";
    default: return "unknown status";
    }
}
