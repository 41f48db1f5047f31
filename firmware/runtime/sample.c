/* Stored samples -> the network's input: see sample.h. */
#include "sample.h"

#include <string.h>

uint32_t mdy_sample_bytes(const mdy_sample_encoding_t *encoding)
{
    return encoding->size * (encoding->format == MDY_SAMPLE_FLOAT32 ? 4u : 1u);
}

float mdy_sample_value(const mdy_sample_encoding_t *encoding, const void *stored, uint32_t i)
{
    const uint8_t *bytes = (const uint8_t *)stored;
    uint32_t c = i / (encoding->size / encoding->channels);
    float value;
    switch (encoding->format) {
    case MDY_SAMPLE_UINT8:
        value = (float)bytes[i];
        break;
    case MDY_SAMPLE_INT8:
        value = (float)(int8_t)bytes[i];
        break;
    default: {
        uint32_t word = (uint32_t)bytes[4u * i] | (uint32_t)bytes[4u * i + 1u] << 8
                        | (uint32_t)bytes[4u * i + 2u] << 16 | (uint32_t)bytes[4u * i + 3u] << 24;
        memcpy(&value, &word, sizeof value);
        break;
    }
    }
    return (value * encoding->scale - encoding->mean[c]) / encoding->std[c];
}

void mdy_sample_decode(const mdy_sample_encoding_t *encoding, const void *stored, float *out)
{
    uint32_t i;
    for (i = 0; i < encoding->size; ++i) {
        out[i] = mdy_sample_value(encoding, stored, i);
    }
}

void mdy_sample_decode_in_place(const mdy_sample_encoding_t *encoding, void *buffer)
{
    uint8_t *bytes = (uint8_t *)buffer;
    uint32_t i = encoding->size;
    while (i > 0u) {
        float value;
        i -= 1u;
        value = mdy_sample_value(encoding, bytes, i); /* reads bytes i*b .. i*b + b-1 only */
        memcpy(bytes + 4u * i, &value, sizeof value); /* bytes 4i .. 4i+3: elements >= i */
    }
}
