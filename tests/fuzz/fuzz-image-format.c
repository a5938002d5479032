/* SPDX-License-Identifier: Apache-2.0
 * fuzz-image-format.c: libFuzzer target for common/image-format.c, the disk
 * image format inspector that sees every uploaded image first.
 *
 * Input layout: two policy bytes, then records. A record is an op byte:
 *   op < 0xf0   feed the next (op & 0x3f) + 1 input bytes as one chunk;
 *   op >= 0xf0  feed ((op & 0x0f) + 1) * 16 KiB of zeros as one chunk,
 * so that short inputs still reach the ISO descriptors at 32 KiB and the
 * VHDX tables at 192 KiB and beyond. The same stream is then fed to a
 * second inspector in one piece: the verdicts must be identical (the
 * inspector promises that chunking never matters), or the target aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image-format.h"

#define MAX_STREAM (4u * 1024 * 1024)
#define ZERO_UNIT (16u * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const claims[] = {
    NULL, "auto", "raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "aki", "ari",
};

static bool
same(const struct yun_imgfmt_result *a, const struct yun_imgfmt_result *b)
{
    return a->format == b->format && a->reject == b->reject &&
           a->virtual_size == b->virtual_size && a->actual_size == b->actual_size &&
           strcmp(a->message, b->message) == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t zeros[16 * ZERO_UNIT];
    static uint8_t *stream;   /* the whole stream, for the one-piece run; kept */
    struct yun_imgfmt_inspector *chunked = NULL, *whole = NULL;
    struct yun_imgfmt_policy pol = { 0 };
    struct yun_imgfmt_result a, b;
    size_t used = 0, i = 2;

    if (size < 2)
        return 0;
    if (!stream && !(stream = malloc(MAX_STREAM)))
        abort();
    pol.claimed_format = claims[data[0] % (sizeof claims / sizeof claims[0])];
    pol.allow_hybrid_iso = data[0] & 0x80;
    /* 0: no limit; else a power of two, so limits near real sizes occur. */
    pol.max_virtual_size = data[1] & 0x40 ? UINT64_C(1) << (data[1] & 0x3f) : 0;

    if (yun_imgfmt_inspector_new(&chunked) < 0 || yun_imgfmt_inspector_new(&whole) < 0)
        abort();
    while (i < size) {
        uint8_t op = data[i++];
        const uint8_t *chunk;
        size_t n;

        if (op >= 0xf0) {
            chunk = zeros;
            n = ((size_t)(op & 0x0f) + 1) * ZERO_UNIT;
        } else {
            chunk = data + i;
            n = (size_t)(op & 0x3f) + 1;
            if (n > size - i)
                n = size - i;
            i += n;
        }
        if (n > MAX_STREAM - used)
            break;
        memcpy(stream + used, chunk, n);
        used += n;
        if (yun_imgfmt_feed(chunked, chunk, n) < 0)
            abort();
    }
    if (yun_imgfmt_feed(whole, stream, used) < 0)
        abort();

    if (yun_imgfmt_finish(chunked, &pol, &a) < 0 || yun_imgfmt_finish(whole, &pol, &b) < 0)
        abort();
    if (!same(&a, &b) || a.actual_size != used)
        abort();
    if (a.format < 0 || a.format >= _YUN_IMGFMT_MAX || a.reject < 0 ||
        a.reject >= _YUN_IMGFMT_REJECT_MAX || !yun_imgfmt_reject_to_string(a.reject))
        abort();
    /* A verdict is either a clean accept or a reason with a sentence. */
    if ((a.reject == YUN_IMGFMT_REJECT_NONE) != (a.message[0] == '\0'))
        abort();

    yun_imgfmt_inspector_free(chunked);
    yun_imgfmt_inspector_free(whole);
    return 0;
}
