/*
 * The MeDyate serial protocol, version 2: how a host trains the engine on a device over a byte
 * stream (a UART, a TCP socket to QEMU or to the host build). The host side is
 * medyate_mcu/device/protocol.py; the two must agree on every number below.
 *
 * Frame (all integers little-endian, floats IEEE-754 binary32 little-endian):
 *
 *   offset  size  field
 *   0       2     sync: 0xA5 0x5A
 *   2       2     length: payload bytes, 0 .. the device's max payload (READY tells the host)
 *   4       1     type (below)
 *   5       1     sequence number: chosen by the host, echoed in the reply
 *   6       n     payload
 *   6+n     4     CRC-32 (IEEE 802.3, the zlib one) of bytes 2 .. 6+n-1 (length .. payload)
 *
 * The receiver hunts for the sync bytes, so garbage between frames is skipped. A length above
 * the receive buffer is refused as soon as the header is in (ERROR BAD_LENGTH), a CRC mismatch
 * when the frame is complete (ERROR BAD_CRC); either way the receiver goes back to hunting.
 * A frame cut short is dropped when the byte stream goes idle (read_byte returns
 * MDY_PROTO_IDLE: the UART saw no byte for its idle timeout, firmware/hal/uart.h), and counted
 * in frames_bad; a host that starts a session stays silent for longer than that first. Without
 * idle reports a cut frame is completed by the following bytes and fails its CRC; a host can
 * also send max-payload + 10 bytes of 0x00 (no sync in them) to flush the receiver.
 *
 * Every request gets exactly one reply with the request's sequence number: its *_RESULT type
 * (request | 0x80), or ERROR. The device sends READY (sequence 0) once at start-up, unasked,
 * because bytes the host sent before the UART was enabled are lost; HELLO asks for it again.
 *
 *   type  name           direction  payload
 *   0x01  HELLO          h -> d     (none)
 *   0x81  READY          d -> h     version u16, flags u16, model_hash[8], build_hash[8],
 *                                   budget u32, arena u32, pool u32, input_size u32,
 *                                   classes u16, n_candidates u16, n_channels u32, epochs u32,
 *                                   epoch u32 (current, from 1), max_payload u32,
 *                                   sample_format u8 (mdy_sample_format_t, sample.h), pad[3],
 *                                   sample_bytes u32 (one stored sample),
 *                                   board name (the rest, ASCII, not terminated)
 *   0x02  RESET          h -> d     (none): restart training from the pre-trained weights
 *                                   (mdy_init); replied with READY
 *   0x03  SAMPLE         h -> d     label i32, the stored sample (sample_bytes bytes: CHW
 *                                   values in the build's sample_format, decoded on the device
 *                                   with the build's encoding, sample.h)
 *   0x83  SAMPLE_RESULT  d -> h     loss f32, correct u8, pad[3], epoch u32,
 *                                   samples_in_epoch u32, cycles u32
 *   0x04  END_EPOCH      h -> d     (none)
 *   0x84  EPOCH_RESULT   d -> h     epoch u32 (the one that ended), samples u32, correct u32,
 *                                   mean loss f32, selected u32 (channels it trained),
 *                                   next_selected u32, next_lr f32
 *   0x05  PREDICT        h -> d     the stored sample (sample_bytes bytes, as in SAMPLE)
 *   0x85  PREDICTION     d -> h     label u16, pad u16, cycles u32
 *   0x06  STATS          h -> d     (none)
 *   0x86  STATS_RESULT   d -> h     epoch, samples_in_epoch, correct_in_epoch u32,
 *                                   loss_sum f32, lr f32, n_selected u32,
 *                                   last_epoch_samples, last_epoch_correct u32,
 *                                   last_epoch_loss f32, sample_cycles u32,
 *                                   predict_cycles u32, frames_bad u32 (framing errors seen),
 *                                   reserved u32
 *   0x07  READ_WEIGHTS   h -> d     region u16, pad u16, offset u32, count u32 (elements)
 *   0x87  DATA           d -> h     region u16, element_size u16, offset u32, count u32,
 *                                   total u32 (elements in the region), then the elements.
 *                                   count 0 asks only for total.
 *   0x7F  ERROR          d -> h     code u8, request type u8, engine status i16,
 *                                   message (the rest, ASCII, not terminated)
 *
 * Regions: 0 the classifier (weights then bias, f32), 1 the norm vector (f32), 2 this epoch's
 * selected channels (u16, canonical order), 0x100 + i candidate layer i's weights (f32, in the
 * order of mdy_model.candidates). cycles are 0 where the build has no cycle counter.
 *
 * READY's byte offsets: 0 version, 2 flags, 4 model_hash, 12 build_hash, 20 budget, 24 arena,
 * 28 pool, 32 input_size, 36 classes, 38 n_candidates, 40 n_channels, 44 epochs, 48 epoch,
 * 52 max_payload, 56 sample_format, 57 pad (0), 60 sample_bytes, 64 board (at most 64 bytes).
 * A SAMPLE's payload is 4 + sample_bytes bytes (sample_bytes = input_size for uint8 and int8
 * samples, 4 * input_size for float32), a PREDICT's sample_bytes; any other length gets ERROR
 * BAD_PAYLOAD with the expected byte count in its message. Version 1 sent f32[input_size]
 * (the network's input) in both and had no sample_format and sample_bytes.
 */
#ifndef MDY_PROTOCOL_H
#define MDY_PROTOCOL_H

#include <stdint.h>

#include "engine.h"
#include "sample.h"

#define MDY_PROTO_VERSION 2u
#define MDY_PROTO_SYNC0 0xA5u
#define MDY_PROTO_SYNC1 0x5Au
#define MDY_PROTO_HEADER 6u   /* sync, length, type, sequence */
#define MDY_PROTO_OVERHEAD 10u /* header + CRC */

enum {
    MDY_MSG_HELLO = 0x01,
    MDY_MSG_RESET = 0x02,
    MDY_MSG_SAMPLE = 0x03,
    MDY_MSG_END_EPOCH = 0x04,
    MDY_MSG_PREDICT = 0x05,
    MDY_MSG_STATS = 0x06,
    MDY_MSG_READ_WEIGHTS = 0x07,
    MDY_MSG_REPLY = 0x80, /* reply type = request type | MDY_MSG_REPLY */
    MDY_MSG_READY = 0x81,
    MDY_MSG_SAMPLE_RESULT = 0x83,
    MDY_MSG_EPOCH_RESULT = 0x84,
    MDY_MSG_PREDICTION = 0x85,
    MDY_MSG_STATS_RESULT = 0x86,
    MDY_MSG_DATA = 0x87,
    MDY_MSG_ERROR = 0x7F
};

/* ERROR codes: a wire format of their own (the frame's code byte). When the engine refuses a
 * request (MDY_PERR_ENGINE), its mdy_status_t (mdy_status.h) is the frame's engine status. */
enum {
    MDY_PERR_BAD_CRC = 1,      /* the frame's CRC did not match */
    MDY_PERR_BAD_LENGTH = 2,   /* length above the receive buffer */
    MDY_PERR_UNKNOWN_TYPE = 3, /* not a request type */
    MDY_PERR_BAD_PAYLOAD = 4,  /* wrong payload size for the type */
    MDY_PERR_ENGINE = 5,       /* the engine refused (status in the frame) */
    MDY_PERR_BAD_REGION = 6    /* READ_WEIGHTS outside a region, or a reply above max payload */
};

enum { MDY_REGION_CLASSIFIER = 0, MDY_REGION_NORMS = 1, MDY_REGION_SELECTED = 2,
       MDY_REGION_CANDIDATE = 0x100 };

/* The byte stream. read_byte blocks; it returns 0..255, MDY_PROTO_IDLE when no byte came for a
 * while (a partial frame is dropped), or -1 when the stream has ended (the host build's socket
 * closed), which makes mdy_proto_serve return. */
#define MDY_PROTO_IDLE (-2)
typedef struct {
    int (*read_byte)(void *context);
    void (*write)(void *context, const uint8_t *data, uint32_t length);
    uint32_t (*cycles)(void); /* a cycle counter, or NULL */
    void *context;
} mdy_proto_io_t;

/* What READY reports besides the engine's own descriptor. */
typedef struct {
    uint8_t model_hash[8]; /* first bytes of the source model's SHA-256 */
    uint8_t build_hash[8]; /* first bytes of the SHA-256 of the build manifest */
    uint32_t budget_bytes, arena_bytes;
    const char *board;
} mdy_proto_info_t;

/* The receiver. The application declares it (static) with a receive buffer of `capacity` bytes,
 * 4-byte aligned, at least 4 + 4 * input_size (a SAMPLE, decoded to floats in place) and 64: no
 * heap. */
typedef struct {
    const mdy_model_t *model;                /* the engine it drives */
    const mdy_sample_encoding_t *encoding;   /* its stored samples (size = input_size) */
    mdy_proto_io_t io;
    const mdy_proto_info_t *info;
    uint8_t *buffer;
    uint32_t buffer_bytes; /* the buffer's size */
    uint32_t capacity;     /* the largest payload received: buffer_bytes, at most 0xFFFF */
    /* receive state */
    uint32_t state, have, length, crc;
    uint8_t type, sequence, header[4];
    /* transmit staging */
    uint8_t out[64];
    uint32_t out_used, out_crc;
    /* statistics */
    uint32_t frames_bad, sample_cycles, predict_cycles;
} mdy_proto_t;

/* CRC-32 (zlib's): crc = mdy_crc32(0, data, n) for a whole buffer, or chained over pieces. */
uint32_t mdy_crc32(uint32_t crc, const uint8_t *data, uint32_t length);

void mdy_proto_init(mdy_proto_t *p, const mdy_model_t *model,
                    const mdy_sample_encoding_t *encoding, const mdy_proto_io_t *io,
                    const mdy_proto_info_t *info, uint8_t *buffer, uint32_t capacity);
/* Send READY with sequence number `sequence` (0 at start-up). */
void mdy_proto_send_ready(mdy_proto_t *p, uint8_t sequence);
/* Take one received byte; handles (and replies to) a frame when it completes. */
void mdy_proto_feed(mdy_proto_t *p, uint8_t byte);
/* The stream went idle: drop a partially received frame (counted in frames_bad). */
void mdy_proto_idle(mdy_proto_t *p);
/* Read and handle bytes until the stream ends. */
void mdy_proto_serve(mdy_proto_t *p);

#endif /* MDY_PROTOCOL_H */
