/*
 * Stored samples -> the network's input (medyate_mcu/zoo/samples.py is the host side).
 *
 * A sample is stored as float32, uint8 or int8 values in the model's input layout (CHW) and
 * enters the network as
 *
 *     x[i] = ((float)stored[i] * scale - mean[c]) / std[c]      c = i / (size / channels)
 *
 * in IEEE float32, each operation rounded once (compile with -ffp-contract=off, as the whole
 * runtime is): the host reference decodes the same bits. Embedded training data (data.c) and the
 * serial link's SAMPLE and PREDICT frames carry samples in the build's format, which READY
 * announces.
 */
#ifndef MDY_SAMPLE_H
#define MDY_SAMPLE_H

#include <stdint.h>

/* The element type of a stored sample (a wire format: READY's sample_format). */
typedef enum {
    MDY_SAMPLE_FLOAT32 = 0,
    MDY_SAMPLE_UINT8 = 1,
    MDY_SAMPLE_INT8 = 2
} mdy_sample_format_t;

typedef struct {
    mdy_sample_format_t format;
    uint32_t size;     /* values per sample */
    uint32_t channels; /* size / channels values per channel */
    float scale;
    const float *mean; /* [channels] */
    const float *std;  /* [channels] */
} mdy_sample_encoding_t;

/* Bytes of one stored sample. */
uint32_t mdy_sample_bytes(const mdy_sample_encoding_t *encoding);

/* The network's input value i of the stored sample at `stored` (little-endian floats, any
 * alignment). */
float mdy_sample_value(const mdy_sample_encoding_t *encoding, const void *stored, uint32_t i);

/* The whole sample into `out` (`size` floats). */
void mdy_sample_decode(const mdy_sample_encoding_t *encoding, const void *stored, float *out);

/* The stored sample at the start of `buffer` decoded into `size` floats in the same buffer
 * (4 * size bytes, 4-byte aligned): the serial link's receive buffer. Element i is read at byte
 * i * b (b: 1 or 4 bytes a value) and written at byte 4 * i, from the last element down, so no
 * element is overwritten before it is read. The same values as mdy_sample_decode, bit for bit. */
void mdy_sample_decode_in_place(const mdy_sample_encoding_t *encoding, void *buffer);

#endif /* MDY_SAMPLE_H */
