/*
 * Status codes returned by the kernels that can fail (today only mdy_softmax_xent).
 * Kernels that cannot fail return void; shapes are validated by the compiler when it
 * generates the engine, not again on the device.
 */
#ifndef MDY_STATUS_H
#define MDY_STATUS_H

#define MDY_OK 0              /* success */
#define MDY_ERR_LABEL (-1)    /* class label out of range */
#define MDY_ERR_NONFINITE (-2) /* a NaN or infinite value was seen */

#endif /* MDY_STATUS_H */
