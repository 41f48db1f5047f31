/* The MeDyate serial protocol (see protocol.h): framing, CRC-32, and the requests' handling. */
#include "protocol.h"

#include <string.h>


enum { HUNT_SYNC0, HUNT_SYNC1, READ_HEADER, READ_PAYLOAD, READ_CRC };

/* CRC-32, reflected polynomial 0xEDB88320, four bits at a time (a 64-byte table in flash). */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

static uint32_t crc_update(uint32_t state, const uint8_t *data, uint32_t length)
{
    uint32_t i;
    for (i = 0; i < length; ++i) {
        state ^= data[i];
        state = (state >> 4) ^ crc_nibble[state & 15u];
        state = (state >> 4) ^ crc_nibble[state & 15u];
    }
    return state;
}

uint32_t mdy_crc32(uint32_t crc, const uint8_t *data, uint32_t length)
{
    return crc_update(crc ^ 0xFFFFFFFFu, data, length) ^ 0xFFFFFFFFu;
}

static uint32_t get_u32(const uint8_t *b)
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

/* ---- transmitting: the frame is streamed through a small staging buffer -------------------- */

static void flush(mdy_proto_t *p)
{
    if (p->out_used) {
        p->io.write(p->io.context, p->out, p->out_used);
        p->out_used = 0;
    }
}

static void put_raw(mdy_proto_t *p, uint8_t byte)
{
    if (p->out_used == sizeof p->out) {
        flush(p);
    }
    p->out[p->out_used++] = byte;
}

static void put_u8(mdy_proto_t *p, uint8_t byte)
{
    p->out_crc = crc_update(p->out_crc, &byte, 1);
    put_raw(p, byte);
}

static void put_u16(mdy_proto_t *p, uint32_t v)
{
    put_u8(p, (uint8_t)(v & 0xFFu));
    put_u8(p, (uint8_t)((v >> 8) & 0xFFu));
}

static void put_u32(mdy_proto_t *p, uint32_t v)
{
    put_u16(p, v & 0xFFFFu);
    put_u16(p, v >> 16);
}

static void put_f32(mdy_proto_t *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u32(p, bits);
}

static void begin(mdy_proto_t *p, uint8_t type, uint8_t sequence, uint32_t length)
{
    p->out_used = 0;
    put_raw(p, MDY_PROTO_SYNC0);
    put_raw(p, MDY_PROTO_SYNC1);
    p->out_crc = 0xFFFFFFFFu;
    put_u16(p, length);
    put_u8(p, type);
    put_u8(p, sequence);
}

static void end(mdy_proto_t *p)
{
    uint32_t crc = p->out_crc ^ 0xFFFFFFFFu, i;
    for (i = 0; i < 4u; ++i) {
        put_raw(p, (uint8_t)((crc >> (8u * i)) & 0xFFu));
    }
    flush(p);
}

static void send_error(mdy_proto_t *p, uint8_t code, mdy_status_t status, const char *message)
{
    uint32_t n = (uint32_t)strlen(message), i;
    begin(p, MDY_MSG_ERROR, p->sequence, 4u + n);
    put_u8(p, code);
    put_u8(p, p->type);
    put_u16(p, (uint32_t)(uint16_t)(int16_t)status);
    for (i = 0; i < n; ++i) {
        put_u8(p, (uint8_t)message[i]);
    }
    end(p);
}

void mdy_proto_send_ready(mdy_proto_t *p, uint8_t sequence)
{
    const mdy_proto_info_t *info = p->info;
    uint32_t n = (uint32_t)strlen(info->board), i;
    if (n > 64u) {
        n = 64u;
    }
    begin(p, MDY_MSG_READY, sequence, 64u + n);
    put_u16(p, MDY_PROTO_VERSION);
    put_u16(p, 0);
    for (i = 0; i < 8u; ++i) {
        put_u8(p, info->model_hash[i]);
    }
    for (i = 0; i < 8u; ++i) {
        put_u8(p, info->build_hash[i]);
    }
    put_u32(p, info->budget_bytes);
    put_u32(p, info->arena_bytes);
    put_u32(p, p->model->pool_bytes);
    put_u32(p, p->model->input_size);
    put_u16(p, p->model->classes);
    put_u16(p, p->model->n_candidates);
    put_u32(p, p->model->n_channels);
    put_u32(p, p->model->epochs);
    put_u32(p, p->model->state->epoch);
    put_u32(p, p->capacity);
    put_u8(p, (uint8_t)p->encoding->format);
    put_u8(p, 0);
    put_u16(p, 0);
    put_u32(p, mdy_sample_bytes(p->encoding));
    for (i = 0; i < n; ++i) {
        put_u8(p, (uint8_t)info->board[i]);
    }
    end(p);
}

/* ---- requests ------------------------------------------------------------------------------ */

static uint32_t now(const mdy_proto_t *p)
{
    return p->io.cycles ? p->io.cycles() : 0u;
}

/* `text` then the decimal `value` then `tail` into `out` (NUL-terminated, at most size - 1
 * characters): an error message naming a byte count, without printf. */
static void count_message(char *out, uint32_t size, const char *text, uint32_t value,
                          const char *tail)
{
    char digits[10];
    uint32_t used = 0, n = 0;
    while (*text && used + 1u < size) {
        out[used++] = *text++;
    }
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value);
    while (n && used + 1u < size) {
        out[used++] = digits[--n];
    }
    while (*tail && used + 1u < size) {
        out[used++] = *tail++;
    }
    out[used] = '\0';
}

/* The payload from byte `offset` on is one stored sample: decode it into the network's input in
 * place (the buffer holds 4 * input_size bytes after `offset`); NULL after an ERROR reply. */
static const float *stored_sample(mdy_proto_t *p, uint32_t offset, const char *what)
{
    const mdy_sample_encoding_t *encoding = p->encoding;
    uint32_t expected = offset + mdy_sample_bytes(encoding);
    char message[64];
    if (encoding->size != p->model->input_size
        || p->buffer_bytes < offset + 4u * encoding->size) {
        send_error(p, MDY_PERR_BAD_PAYLOAD, MDY_OK,
                   "the firmware's sample encoding or receive buffer does not fit the model");
        return NULL;
    }
    if (p->length != expected) {
        count_message(message, sizeof message, what, expected, " bytes");
        send_error(p, MDY_PERR_BAD_PAYLOAD, MDY_OK, message);
        return NULL;
    }
    mdy_sample_decode_in_place(encoding, p->buffer + offset);
    return (const float *)(const void *)(p->buffer + offset);
}

static void handle_sample(mdy_proto_t *p)
{
    const mdy_state_t *s = p->model->state;
    uint32_t correct_before = s->correct_in_epoch, start;
    float loss = 0.0f;
    int32_t label;
    mdy_status_t status;
    const float *input = stored_sample(p, 4u, "SAMPLE needs label + stored sample = ");
    if (input == NULL) {
        return;
    }
    label = (int32_t)get_u32(p->buffer);
    start = now(p);
    status = mdy_train_sample(p->model, input, label, &loss);
    p->sample_cycles = now(p) - start;
    if (status != MDY_OK) {
        send_error(p, MDY_PERR_ENGINE, status, mdy_status_message(status));
        return;
    }
    begin(p, MDY_MSG_SAMPLE_RESULT, p->sequence, 20u);
    put_f32(p, loss);
    put_u8(p, s->correct_in_epoch != correct_before ? 1u : 0u);
    put_u8(p, 0);
    put_u16(p, 0);
    put_u32(p, s->epoch);
    put_u32(p, s->samples_in_epoch);
    put_u32(p, p->sample_cycles);
    end(p);
}

static void handle_end_epoch(mdy_proto_t *p)
{
    const mdy_state_t *s = p->model->state;
    uint32_t epoch = s->epoch, selected = s->n_selected;
    mdy_status_t status;
    if (p->length != 0u) {
        send_error(p, MDY_PERR_BAD_PAYLOAD, MDY_OK, "END_EPOCH takes no payload");
        return;
    }
    status = mdy_end_epoch(p->model);
    if (status != MDY_OK) {
        send_error(p, MDY_PERR_ENGINE, status, mdy_status_message(status));
        return;
    }
    begin(p, MDY_MSG_EPOCH_RESULT, p->sequence, 28u);
    put_u32(p, epoch);
    put_u32(p, s->last_epoch_samples);
    put_u32(p, s->last_epoch_correct);
    put_f32(p, s->last_epoch_loss);
    put_u32(p, selected);
    put_u32(p, s->n_selected);
    put_f32(p, s->lr);
    end(p);
}

static void handle_predict(mdy_proto_t *p)
{
    uint32_t start;
    uint16_t label = 0;
    mdy_status_t status;
    const float *input = stored_sample(p, 0u, "PREDICT needs the stored sample = ");
    if (input == NULL) {
        return;
    }
    start = now(p);
    status = mdy_predict(p->model, input, &label);
    p->predict_cycles = now(p) - start;
    if (status != MDY_OK) {
        send_error(p, MDY_PERR_ENGINE, status, mdy_status_message(status));
        return;
    }
    begin(p, MDY_MSG_PREDICTION, p->sequence, 8u);
    put_u16(p, label);
    put_u16(p, 0);
    put_u32(p, p->predict_cycles);
    end(p);
}

static void handle_stats(mdy_proto_t *p)
{
    const mdy_state_t *s = p->model->state;
    if (p->length != 0u) {
        send_error(p, MDY_PERR_BAD_PAYLOAD, MDY_OK, "STATS takes no payload");
        return;
    }
    begin(p, MDY_MSG_STATS_RESULT, p->sequence, 52u);
    put_u32(p, s->epoch);
    put_u32(p, s->samples_in_epoch);
    put_u32(p, s->correct_in_epoch);
    put_f32(p, s->loss_sum);
    put_f32(p, s->lr);
    put_u32(p, s->n_selected);
    put_u32(p, s->last_epoch_samples);
    put_u32(p, s->last_epoch_correct);
    put_f32(p, s->last_epoch_loss);
    put_u32(p, p->sample_cycles);
    put_u32(p, p->predict_cycles);
    put_u32(p, p->frames_bad);
    put_u32(p, 0);
    end(p);
}

static void handle_read(mdy_proto_t *p)
{
    const uint8_t *b = p->buffer;
    uint32_t region, offset, count, total, i;
    const float *values = NULL;
    const uint16_t *indices = NULL;
    if (p->length != 12u) {
        send_error(p, MDY_PERR_BAD_PAYLOAD, MDY_OK, "READ_WEIGHTS needs region, offset, count");
        return;
    }
    region = (uint32_t)b[0] | ((uint32_t)b[1] << 8);
    offset = get_u32(b + 4);
    count = get_u32(b + 8);
    if (region == MDY_REGION_CLASSIFIER) {
        values = p->model->classifier;
        total = p->model->classifier_size;
    } else if (region == MDY_REGION_NORMS) {
        values = p->model->norms;
        total = p->model->n_channels;
    } else if (region == MDY_REGION_SELECTED) {
        indices = p->model->selected;
        total = p->model->state->n_selected;
    } else if (region >= MDY_REGION_CANDIDATE
               && region - MDY_REGION_CANDIDATE < p->model->n_candidates) {
        const mdy_candidate_t *c = &p->model->candidates[region - MDY_REGION_CANDIDATE];
        values = c->weights;
        total = mdy_candidate_weights(c);
    } else {
        send_error(p, MDY_PERR_BAD_REGION, MDY_OK, "no such region");
        return;
    }
    if (offset > total || count > total - offset) {
        send_error(p, MDY_PERR_BAD_REGION, MDY_OK, "offset + count beyond the region");
        return;
    }
    if (count > (p->capacity - 16u) / (indices ? 2u : 4u)) {
        send_error(p, MDY_PERR_BAD_REGION, MDY_OK, "count above the max payload");
        return;
    }
    begin(p, MDY_MSG_DATA, p->sequence, 16u + count * (indices ? 2u : 4u));
    put_u16(p, region);
    put_u16(p, indices ? 2u : 4u);
    put_u32(p, offset);
    put_u32(p, count);
    put_u32(p, total);
    for (i = 0; i < count; ++i) {
        if (indices) {
            put_u16(p, indices[offset + i]);
        } else {
            put_f32(p, values[offset + i]);
        }
    }
    end(p);
}

static void handle_frame(mdy_proto_t *p)
{
    switch (p->type) {
    case MDY_MSG_HELLO:
    case MDY_MSG_RESET:
        if (p->length != 0u) {
            send_error(p, MDY_PERR_BAD_PAYLOAD, MDY_OK, "HELLO and RESET take no payload");
            return;
        }
        if (p->type == MDY_MSG_RESET) {
            mdy_status_t status = mdy_init(p->model);
            if (status != MDY_OK) {
                send_error(p, MDY_PERR_ENGINE, status, mdy_status_message(status));
                return;
            }
            p->sample_cycles = p->predict_cycles = 0;
        }
        mdy_proto_send_ready(p, p->sequence);
        return;
    case MDY_MSG_SAMPLE: handle_sample(p); return;
    case MDY_MSG_END_EPOCH: handle_end_epoch(p); return;
    case MDY_MSG_PREDICT: handle_predict(p); return;
    case MDY_MSG_STATS: handle_stats(p); return;
    case MDY_MSG_READ_WEIGHTS: handle_read(p); return;
    default:
        p->frames_bad += 1;
        send_error(p, MDY_PERR_UNKNOWN_TYPE, MDY_OK, "unknown message type");
        return;
    }
}

/* ---- receiving ----------------------------------------------------------------------------- */

void mdy_proto_init(mdy_proto_t *p, const mdy_model_t *model,
                    const mdy_sample_encoding_t *encoding, const mdy_proto_io_t *io,
                    const mdy_proto_info_t *info, uint8_t *buffer, uint32_t capacity)
{
    memset(p, 0, sizeof *p);
    p->model = model;
    p->encoding = encoding;
    p->buffer_bytes = capacity;
    p->io = *io;
    p->info = info;
    p->buffer = buffer;
    p->capacity = capacity > 0xFFFFu ? 0xFFFFu : capacity;
    p->state = HUNT_SYNC0;
}

void mdy_proto_feed(mdy_proto_t *p, uint8_t byte)
{
    switch (p->state) {
    case HUNT_SYNC0:
        if (byte == MDY_PROTO_SYNC0) {
            p->state = HUNT_SYNC1;
        }
        return;
    case HUNT_SYNC1:
        p->state = byte == MDY_PROTO_SYNC1 ? READ_HEADER : byte == MDY_PROTO_SYNC0 ? HUNT_SYNC1
                                                                                  : HUNT_SYNC0;
        p->have = 0;
        return;
    case READ_HEADER:
        p->header[p->have++] = byte;
        if (p->have < 4u) {
            return;
        }
        p->length = (uint32_t)p->header[0] | ((uint32_t)p->header[1] << 8);
        p->type = p->header[2];
        p->sequence = p->header[3];
        p->crc = crc_update(0xFFFFFFFFu, p->header, 4);
        p->have = 0;
        if (p->length > p->capacity) {
            p->frames_bad += 1;
            p->state = HUNT_SYNC0;
            send_error(p, MDY_PERR_BAD_LENGTH, MDY_OK, "length above the receive buffer");
            return;
        }
        p->state = p->length ? READ_PAYLOAD : READ_CRC;
        return;
    case READ_PAYLOAD:
        p->buffer[p->have++] = byte;
        if (p->have == p->length) {
            p->crc = crc_update(p->crc, p->buffer, p->length);
            p->have = 0;
            p->state = READ_CRC;
        }
        return;
    default: /* READ_CRC */
        p->header[p->have++] = byte;
        if (p->have < 4u) {
            return;
        }
        p->state = HUNT_SYNC0;
        if (get_u32(p->header) != (p->crc ^ 0xFFFFFFFFu)) {
            p->frames_bad += 1;
            send_error(p, MDY_PERR_BAD_CRC, MDY_OK, "CRC mismatch");
            return;
        }
        handle_frame(p);
        return;
    }
}

void mdy_proto_idle(mdy_proto_t *p)
{
    if (p->state != HUNT_SYNC0 && p->state != HUNT_SYNC1) {
        p->frames_bad += 1;
    }
    p->state = HUNT_SYNC0;
    p->have = 0;
}

void mdy_proto_serve(mdy_proto_t *p)
{
    for (;;) {
        int byte = p->io.read_byte(p->io.context);
        if (byte == MDY_PROTO_IDLE) {
            mdy_proto_idle(p);
            continue;
        }
        if (byte < 0) {
            return;
        }
        mdy_proto_feed(p, (uint8_t)byte);
    }
}
