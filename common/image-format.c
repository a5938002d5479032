/* SPDX-License-Identifier: Apache-2.0
 * image-format.c: streaming disk image format inspector (see image-format.h).
 *
 * The stream is never buffered whole. The inspector keeps:
 *   - the first 64 KiB ("head"): qcow2, VMDK, VHD (dynamic), VHDX ident and
 *     VDI headers, the MBR/GPT, and ISO 9660 volume descriptors at 32 KiB;
 *   - the last 1536 bytes ("tail", a ring): the VHD footer of fixed disks and
 *     the footer + end-of-stream marker of streamOptimized VMDKs;
 *   - regions asked for once earlier bytes are known: the VMDK embedded
 *     descriptor (from byte 512 up to its first NUL, at most 1 MiB - 1, as
 *     qemu reads it), the VHDX region table at 192 KiB, its metadata table
 *     and the two metadata items we need.
 * A region is only ever asked for at a point in the stream that is fixed by
 * the file's content (the end of the region it was computed from), never by
 * where a chunk happened to end, so the verdict is the same however the
 * stream was chunked. A region that would start before that point is
 * treated as corrupt rather than read from bytes already gone.
 *
 * Formats follow qemu's drivers (block/qcow2.c, vmdk.c, vpc.c, vhdx.c,
 * vdi.c), the published specifications, and the checks Glance added for
 * CVE-2022-47951 (VMDK extents), CVE-2024-32498 (qcow2 data-file) and
 * OSSA-2024-001/-002. Every multi-byte field is read with an explicit
 * endianness after a bounds check; products and sums of header fields use
 * overflow-checked arithmetic. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cleanup.h"
#include "image-format.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

#define HEAD_SIZE (64 * KIB)
#define TAIL_SIZE 1536          /* VMDK footer marker + footer + EOS marker */
#define EARLY_PROBE_AT 512      /* a sector: every format's first header fits */
#define READ_CHUNK (1 * MIB)

#define QCOW2_INCOMPAT_DIRTY (UINT64_C(1) << 0)
#define QCOW2_INCOMPAT_CORRUPT (UINT64_C(1) << 1)
#define QCOW2_INCOMPAT_DATA_FILE (UINT64_C(1) << 2)
#define QCOW2_INCOMPAT_COMPRESSION (UINT64_C(1) << 3)
#define QCOW2_INCOMPAT_EXTL2 (UINT64_C(1) << 4)
#define QCOW2_INCOMPAT_KNOWN (UINT64_C(0x1f))
#define QCOW2_MAX_L1_ENTRIES (32 * MIB / 8)   /* qemu's QCOW_MAX_L1_SIZE */

#define VMDK_DESC_OFFSET 512
#define VMDK_DESC_MAX ((1u << 20) - 1)       /* qemu reads at most this much */
#define VMDK_DESC_MAX_SECTORS 2047            /* so the descriptor ends within 1 MiB */
#define VMDK_GD_AT_END UINT64_MAX
#define VMDK_FLAG_NL_DETECT (1u << 0)
#define VMDK_MARKER_EOS 0
#define VMDK_MARKER_FOOTER 3
#define VMDK_MAX_GRANULARITY 0x200000         /* sectors; qemu's limit */
#define VMDK_MAX_L1_SIZE (512u * MIB)

#define VHD_TYPE_FIXED 2
#define VHD_TYPE_DYNAMIC 3
#define VHD_TYPE_DIFF 4
#define VHD_MAX_SECTORS UINT64_C(0xff000000) /* 2040 GiB */
#define VHD_MAX_GEOMETRY (UINT64_C(65535) * 16 * 255)
#define VHD_DYN_HEADER_SIZE 1024

#define VHDX_RT_OFFSET (192 * KIB)
#define VHDX_TABLE_SIZE (64 * KIB)            /* region table and metadata table */
#define VHDX_MAX_ENTRIES 2047
#define VHDX_PARAMS_HAS_PARENT (1u << 1)
#define VHDX_META_REQUIRED (1u << 2)
#define VHDX_RT_REQUIRED (1u << 0)

#define VDI_SIGNATURE UINT32_C(0xbeda107f)
#define VDI_VERSION_1_1 UINT32_C(0x00010001)
#define VDI_HEADER_SIZE 512
#define VDI_BLOCK_SIZE MIB
#define VDI_MAX_BLOCKS UINT32_C(0x3fffffff)

#define ISO_SECTOR 2048
#define ISO_FIRST_VD 16                       /* volume descriptors start at 32 KiB */

#define LUKS_MAGIC "LUKS\xba\xbe"             /* then a big-endian u16 version */
#define QED_MAGIC "QED\0"                      /* little-endian 0x00444551 */

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

/* VHDX GUIDs in their on-disk (mixed-endian) byte order. */
static const uint8_t vhdx_guid_metadata[16] = {   /* 8B7CA206-4790-4B9A-B8FE-575F050F886E */
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
    0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e };
static const uint8_t vhdx_guid_bat[16] = {        /* 2DC27766-F623-4200-9D64-115E9BFD4A08 */
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 };
static const uint8_t vhdx_guid_file_params[16] = { /* CAA16737-FA36-4D43-B3B6-33F0AA44E76B */
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
    0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b };
static const uint8_t vhdx_guid_disk_size[16] = {  /* 2FA54224-CD1B-4876-B211-5DBED83BF4B8 */
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
    0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 };
static const uint8_t vhdx_guid_parent_locator[16] = { /* A8D35F2D-B30B-454D-ABF7-D3D84834AB0C */
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
    0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c };
static const uint8_t vhdx_guid_logical_sector[16] = { /* 8141BF1D-A96F-4709-BA47-F233A8FAAB5F */
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
    0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f };
static const uint8_t vhdx_guid_physical_sector[16] = { /* CDA348C7-445D-4471-9CC9-E9885251C556 */
    0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
    0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56 };
static const uint8_t vhdx_guid_page83[16] = {     /* BECA12AB-B2E6-4523-93EF-C309E000C746 */
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
    0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 };

enum region_id {
    R_HEAD,
    R_VMDK_DESC,
    R_VHDX_RT,
    R_VHDX_MT,
    R_VHDX_DISK_SIZE,
    R_VHDX_PARAMS,
    _R_MAX,
};

/* Bytes [offset, offset + size) of the file, captured as they stream by.
 * Captured bytes are always a prefix: regions are asked for before their
 * first byte arrives. */
struct region {
    uint64_t offset;
    size_t size;          /* bytes wanted; shrinks to the NUL for 'nul_ends' */
    size_t have;          /* bytes captured so far */
    size_t alloc;         /* bytes allocated in 'data' */
    uint8_t *data;        /* owned, except for the head's */
    bool active;          /* asked for */
    bool nul_ends;        /* stop after the first NUL (VMDK descriptor text) */
};

struct yun_imgfmt_inspector {
    uint64_t pos;                     /* bytes fed so far */
    int error;                        /* sticky: -ENOMEM, -EOVERFLOW */
    bool early_done;                  /* the first sector was looked at */
    struct region regions[_R_MAX];
    struct {
        bool rt_parsed, mt_parsed;
        uint64_t meta_offset;
        uint32_t meta_length;
        uint64_t regions_end;         /* end of the furthest region in the table */
        bool has_parent_locator;
        enum yun_imgfmt_reject reject; /* found while streaming, reported at finish */
        char message[200];
    } vhdx;
    uint8_t tail[TAIL_SIZE];          /* ring indexed by file offset % TAIL_SIZE */
    uint8_t head[HEAD_SIZE];
};

static const char *const imgfmt_names[_YUN_IMGFMT_MAX] = {
    [YUN_IMGFMT_RAW] = "raw",
    [YUN_IMGFMT_QCOW2] = "qcow2",
    [YUN_IMGFMT_VMDK] = "vmdk",
    [YUN_IMGFMT_VHD] = "vhd",
    [YUN_IMGFMT_VHDX] = "vhdx",
    [YUN_IMGFMT_VDI] = "vdi",
    [YUN_IMGFMT_ISO] = "iso",
    [YUN_IMGFMT_AKI] = "aki",
    [YUN_IMGFMT_ARI] = "ari",
};

static const char *const reject_names[_YUN_IMGFMT_REJECT_MAX] = {
    [YUN_IMGFMT_REJECT_NONE] = "none",
    [YUN_IMGFMT_REJECT_FORMAT_MISMATCH] = "format-mismatch",
    [YUN_IMGFMT_REJECT_MULTIPLE_FORMATS] = "multiple-formats",
    [YUN_IMGFMT_REJECT_TRUNCATED] = "truncated",
    [YUN_IMGFMT_REJECT_CORRUPT] = "corrupt",
    [YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION] = "unsupported-version",
    [YUN_IMGFMT_REJECT_UNKNOWN_FEATURES] = "unknown-features",
    [YUN_IMGFMT_REJECT_BACKING_FILE] = "backing-file",
    [YUN_IMGFMT_REJECT_DATA_FILE] = "data-file",
    [YUN_IMGFMT_REJECT_VMDK_SUBFORMAT] = "vmdk-subformat",
    [YUN_IMGFMT_REJECT_VMDK_EXTENT] = "vmdk-extent",
    [YUN_IMGFMT_REJECT_TOO_LARGE] = "too-large",
    [YUN_IMGFMT_REJECT_UNSUPPORTED_FORMAT] = "unsupported-format",
};

/* Returns the name of 'f' ("qcow2"), or NULL when out of range. */
const char *
yun_imgfmt_to_string(enum yun_imgfmt f)
{
    if (f < 0 || f >= _YUN_IMGFMT_MAX)
        return NULL;
    return imgfmt_names[f];
}

/* Returns the format named exactly 's', or _YUN_IMGFMT_INVALID (-EINVAL)
 * for NULL or an unknown name. "vpc" is qemu's name, not ours: unknown. */
enum yun_imgfmt
yun_imgfmt_from_string(const char *s)
{
    if (!s)
        return _YUN_IMGFMT_INVALID;
    for (int i = 0; i < _YUN_IMGFMT_MAX; i++)
        if (strcmp(s, imgfmt_names[i]) == 0)
            return i;
    return _YUN_IMGFMT_INVALID;
}

/* Returns the stable name of 'r' ("backing-file"), or NULL when out of
 * range. */
const char *
yun_imgfmt_reject_to_string(enum yun_imgfmt_reject r)
{
    if (r < 0 || r >= _YUN_IMGFMT_REJECT_MAX)
        return NULL;
    return reject_names[r];
}

/* Returns the reason named exactly 's', or _YUN_IMGFMT_REJECT_INVALID. */
enum yun_imgfmt_reject
yun_imgfmt_reject_from_string(const char *s)
{
    if (!s)
        return _YUN_IMGFMT_REJECT_INVALID;
    for (int i = 0; i < _YUN_IMGFMT_REJECT_MAX; i++)
        if (strcmp(s, reject_names[i]) == 0)
            return i;
    return _YUN_IMGFMT_REJECT_INVALID;
}

static uint16_t
rd_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
rd_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
rd_le64(const uint8_t *p)
{
    return (uint64_t)rd_le32(p) | (uint64_t)rd_le32(p + 4) << 32;
}

static uint16_t
rd_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
rd_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t
rd_be64(const uint8_t *p)
{
    return (uint64_t)rd_be32(p) << 32 | (uint64_t)rd_be32(p + 4);
}

static bool
is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static bool
all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* CRC-32C (Castagnoli), which VHDX uses for its headers and region table.
 * Bitwise: it runs once over 64 KiB per image. */
static uint32_t
crc32c(const uint8_t *p, size_t n)
{
    uint32_t crc = UINT32_MAX;

    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (UINT32_C(0x82f63b78) & (0u - (crc & 1)));
    }
    return ~crc;
}

/* Copies at most 'dst_size' - 1 characters of 'src' for quoting in a
 * message: anything but printable ASCII, and the quote itself, become '?',
 * so hostile content cannot forge message text or terminal escapes. */
static void
sanitize(char *dst, size_t dst_size, const char *src, size_t src_len)
{
    size_t n = MIN(src_len, dst_size - 1);

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    dst[n] = '\0';
}

/* --- streaming --------------------------------------------------------- */

/* Returns 0 or -ENOMEM. */
static int
region_activate(struct region *r, uint64_t offset, size_t size, bool nul_ends)
{
    r->offset = offset;
    r->size = size;
    r->have = 0;
    r->nul_ends = nul_ends;
    /* The VMDK descriptor grows as it arrives: qemu writes ~10 KiB, the cap
     * is 1 MiB, and most streams never get there. Fixed tables are small. */
    r->alloc = nul_ends ? MIN(size, 16 * KIB) : size;
    r->data = malloc(r->alloc ? r->alloc : 1);
    if (!r->data)
        return -ENOMEM;
    r->active = true;
    return 0;
}

/* Offers 'r' the 'n' bytes at 'p', which sit at file offset 'pos'.
 * Returns 0 or -ENOMEM. */
static int
region_capture(struct region *r, uint64_t pos, const uint8_t *p, size_t n)
{
    uint64_t want;
    size_t skip, take;

    if (!r->active || r->have >= r->size)
        return 0;
    want = r->offset + r->have;
    if (want < pos || want - pos >= n)
        return 0;
    skip = (size_t)(want - pos);
    take = MIN(n - skip, r->size - r->have);
    if (r->nul_ends) {
        const uint8_t *z = memchr(p + skip, 0, take);
        if (z) {
            take = (size_t)(z - (p + skip)) + 1;
            r->size = r->have + take;
        }
    }
    if (r->have + take > r->alloc) {
        size_t alloc = r->alloc * 2;
        uint8_t *data;

        if (alloc < r->have + take)
            alloc = r->have + take;
        if (alloc > r->size)
            alloc = r->size;
        data = realloc(r->data, alloc);
        if (!data)
            return -ENOMEM;
        r->data = data;
        r->alloc = alloc;
    }
    memcpy(r->data + r->have, p + skip, take);
    r->have += take;
    return 0;
}

static bool
region_complete(const struct region *r)
{
    return r->active && r->have == r->size;
}

static void
tail_push(struct yun_imgfmt_inspector *insp, const uint8_t *p, size_t n)
{
    uint64_t pos = insp->pos;
    size_t idx, first;

    if (n > TAIL_SIZE) {
        p += n - TAIL_SIZE;
        pos += n - TAIL_SIZE;
        n = TAIL_SIZE;
    }
    idx = (size_t)(pos % TAIL_SIZE);
    first = MIN(n, TAIL_SIZE - idx);
    memcpy(insp->tail + idx, p, first);
    memcpy(insp->tail, p + first, n - first);
}

static void __attribute__((format(printf, 3, 4)))
vhdx_fail(struct yun_imgfmt_inspector *insp, enum yun_imgfmt_reject why, const char *fmt, ...)
{
    va_list ap;

    if (insp->vhdx.reject != YUN_IMGFMT_REJECT_NONE)
        return;
    insp->vhdx.reject = why;
    va_start(ap, fmt);
    vsnprintf(insp->vhdx.message, sizeof insp->vhdx.message, fmt, ap);
    va_end(ap);
}

/* Parses the VHDX region table, now complete at the stream position, and
 * asks for the metadata table. Returns 0 or -ENOMEM; format problems are
 * recorded for finish. */
static int
vhdx_parse_region_table(struct yun_imgfmt_inspector *insp)
{
    struct region *rt = &insp->regions[R_VHDX_RT];
    uint8_t *d = rt->data;
    uint32_t stored, count;
    bool have_meta = false, have_bat = false;
    uint64_t end, furthest = 0;

    if (memcmp(d, "regi", 4) != 0) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                  "The VHDX region table signature is missing.");
        return 0;
    }
    /* The checksum covers the whole 64 KiB with its own field as zero. */
    stored = rd_le32(d + 4);
    memset(d + 4, 0, 4);
    if (crc32c(d, VHDX_TABLE_SIZE) != stored) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT, "The VHDX region table checksum is wrong.");
        return 0;
    }
    count = rd_le32(d + 8);
    if (count > VHDX_MAX_ENTRIES) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                  "The VHDX region table has %" PRIu32 " entries; at most %d are allowed.",
                  count, VHDX_MAX_ENTRIES);
        return 0;
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = d + 16 + (size_t)i * 32;
        uint64_t off = rd_le64(e + 16);
        uint32_t len = rd_le32(e + 24);
        uint32_t flags = rd_le32(e + 28);

        if (__builtin_add_overflow(off, (uint64_t)len, &end)) {
            vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                      "A VHDX region lies beyond any possible file size.");
            return 0;
        }
        if (end > furthest)
            furthest = end;
        if (memcmp(e, vhdx_guid_metadata, 16) == 0) {
            if (have_meta) {
                vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                          "The VHDX region table lists the metadata region twice.");
                return 0;
            }
            have_meta = true;
            insp->vhdx.meta_offset = off;
            insp->vhdx.meta_length = len;
        } else if (memcmp(e, vhdx_guid_bat, 16) == 0) {
            if (have_bat) {
                vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                          "The VHDX region table lists the block allocation table twice.");
                return 0;
            }
            have_bat = true;
        } else if (flags & VHDX_RT_REQUIRED) {
            vhdx_fail(insp, YUN_IMGFMT_REJECT_UNKNOWN_FEATURES,
                      "The VHDX image requires a region type that is not known.");
            return 0;
        }
    }
    if (!have_meta || !have_bat) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                  "The VHDX region table lacks the metadata region or the block allocation table.");
        return 0;
    }
    insp->vhdx.regions_end = furthest;
    if (insp->vhdx.meta_length < VHDX_TABLE_SIZE) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT, "The VHDX metadata region is too small.");
        return 0;
    }
    /* The specification puts regions at 1 MiB or later; one that starts
     * inside the headers is both invalid and out of the stream's reach. */
    if (insp->vhdx.meta_offset < insp->pos ||
        insp->vhdx.meta_offset > UINT64_MAX - VHDX_TABLE_SIZE) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                  "The VHDX metadata region lies at byte %" PRIu64 ", inside the headers.",
                  insp->vhdx.meta_offset);
        return 0;
    }
    return region_activate(&insp->regions[R_VHDX_MT], insp->vhdx.meta_offset,
                           VHDX_TABLE_SIZE, false);
}

/* Parses the VHDX metadata table and asks for the disk-size and
 * file-parameters items. Returns 0 or -ENOMEM. */
static int
vhdx_parse_metadata_table(struct yun_imgfmt_inspector *insp)
{
    const uint8_t *d = insp->regions[R_VHDX_MT].data;
    uint16_t count;
    uint32_t size_off = 0, params_off = 0;
    bool have_size = false, have_params = false;
    int r;

    if (memcmp(d, "metadata", 8) != 0) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                  "The VHDX metadata table signature is missing.");
        return 0;
    }
    count = rd_le16(d + 10);
    if (count > VHDX_MAX_ENTRIES) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                  "The VHDX metadata table has %u entries; at most %d are allowed.",
                  (unsigned)count, VHDX_MAX_ENTRIES);
        return 0;
    }
    for (unsigned i = 0; i < count; i++) {
        const uint8_t *e = d + 32 + (size_t)i * 32;
        uint32_t off = rd_le32(e + 16);
        uint32_t len = rd_le32(e + 20);
        uint32_t flags = rd_le32(e + 24);

        /* Items live after the 64 KiB table and inside the region. */
        if (len > 0 && (off < VHDX_TABLE_SIZE || off > insp->vhdx.meta_length ||
                        len > insp->vhdx.meta_length - off)) {
            vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                      "A VHDX metadata item lies outside the metadata region.");
            return 0;
        }
        if (memcmp(e, vhdx_guid_disk_size, 16) == 0) {
            if (have_size || len != 8) {
                vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                          "The VHDX virtual disk size item is invalid.");
                return 0;
            }
            have_size = true;
            size_off = off;
        } else if (memcmp(e, vhdx_guid_file_params, 16) == 0) {
            if (have_params || len != 8) {
                vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                          "The VHDX file parameters item is invalid.");
                return 0;
            }
            have_params = true;
            params_off = off;
        } else if (memcmp(e, vhdx_guid_parent_locator, 16) == 0) {
            insp->vhdx.has_parent_locator = true;
        } else if (memcmp(e, vhdx_guid_logical_sector, 16) != 0 &&
                   memcmp(e, vhdx_guid_physical_sector, 16) != 0 &&
                   memcmp(e, vhdx_guid_page83, 16) != 0 && (flags & VHDX_META_REQUIRED)) {
            vhdx_fail(insp, YUN_IMGFMT_REJECT_UNKNOWN_FEATURES,
                      "The VHDX image requires a metadata item that is not known.");
            return 0;
        }
    }
    if (!have_size || !have_params) {
        vhdx_fail(insp, YUN_IMGFMT_REJECT_CORRUPT,
                  "The VHDX metadata lacks the virtual disk size or the file parameters.");
        return 0;
    }
    /* Cannot overflow: every region's offset + length was checked, and the
     * items lie inside the metadata region. */
    r = region_activate(&insp->regions[R_VHDX_DISK_SIZE], insp->vhdx.meta_offset + size_off, 8,
                        false);
    if (r < 0)
        return r;
    return region_activate(&insp->regions[R_VHDX_PARAMS], insp->vhdx.meta_offset + params_off, 8,
                           false);
}

/* Runs after every step of the stream; steps end exactly where a region
 * this reacts to completes, so it sees the same state whatever the
 * chunking. Returns 0 or -ENOMEM. */
static int
post_process(struct yun_imgfmt_inspector *insp)
{
    int r;

    if (!insp->early_done && insp->pos >= EARLY_PROBE_AT) {
        insp->early_done = true;
        if (memcmp(insp->head, "KDMV", 4) == 0) {
            /* qemu reads the embedded descriptor from byte 512 up to its
             * first NUL or 1 MiB - 1 bytes, whatever the header's size
             * field says, so that is what has to be checked. */
            r = region_activate(&insp->regions[R_VMDK_DESC], VMDK_DESC_OFFSET,
                                VMDK_DESC_MAX, true);
            if (r < 0)
                return r;
        } else if (memcmp(insp->head, "vhdxfile", 8) == 0) {
            r = region_activate(&insp->regions[R_VHDX_RT], VHDX_RT_OFFSET, VHDX_TABLE_SIZE,
                                false);
            if (r < 0)
                return r;
        }
    }
    if (region_complete(&insp->regions[R_VHDX_RT]) && !insp->vhdx.rt_parsed) {
        insp->vhdx.rt_parsed = true;
        r = vhdx_parse_region_table(insp);
        if (r < 0)
            return r;
    }
    if (region_complete(&insp->regions[R_VHDX_MT]) && !insp->vhdx.mt_parsed) {
        insp->vhdx.mt_parsed = true;
        r = vhdx_parse_metadata_table(insp);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The next stream offset at which post_process must run. */
static uint64_t
next_boundary(const struct yun_imgfmt_inspector *insp)
{
    uint64_t b = UINT64_MAX;

    if (!insp->early_done)
        b = EARLY_PROBE_AT;
    for (int id = R_VHDX_RT; id <= R_VHDX_MT; id++) {
        const struct region *r = &insp->regions[id];
        if (r->active && r->have < r->size && r->offset + r->size < b)
            b = r->offset + r->size;
    }
    return b;
}

/* Creates an inspector for one stream. Returns 0 and '*ret' (free with
 * yun_imgfmt_inspector_free), or -ENOMEM. */
int
yun_imgfmt_inspector_new(struct yun_imgfmt_inspector **ret)
{
    struct yun_imgfmt_inspector *insp;

    if (!ret)
        return -EINVAL;
    insp = calloc(1, sizeof *insp);
    if (!insp)
        return -ENOMEM;
    insp->regions[R_HEAD].data = insp->head;
    insp->regions[R_HEAD].size = HEAD_SIZE;
    insp->regions[R_HEAD].alloc = HEAD_SIZE;
    insp->regions[R_HEAD].active = true;
    *ret = insp;
    return 0;
}

/* Frees 'insp' and everything it captured; NULL is fine. Returns NULL. */
struct yun_imgfmt_inspector *
yun_imgfmt_inspector_free(struct yun_imgfmt_inspector *insp)
{
    if (!insp)
        return NULL;
    for (int id = 0; id < _R_MAX; id++)
        if (id != R_HEAD)
            free(insp->regions[id].data);
    free(insp);
    return NULL;
}

/* Feeds the next 'size' bytes of the image. Chunks may have any size,
 * including 0; only the bytes the verdict needs are copied. Returns 0,
 * -EINVAL for bad arguments, or -ENOMEM / -EOVERFLOW, after which the
 * inspector refuses further feeds and finish returns that error. */
int
yun_imgfmt_feed(struct yun_imgfmt_inspector *insp, const void *data, size_t size)
{
    const uint8_t *p = data;
    int r;

    if (!insp || (!data && size))
        return -EINVAL;
    if (insp->error < 0)
        return insp->error;
    if (size > UINT64_MAX - insp->pos)
        return insp->error = -EOVERFLOW;

    while (size > 0) {
        uint64_t b = next_boundary(insp);
        size_t step = size;

        if (b > insp->pos && b - insp->pos < step)
            step = (size_t)(b - insp->pos);
        for (int id = 0; id < _R_MAX; id++) {
            r = region_capture(&insp->regions[id], insp->pos, p, step);
            if (r < 0)
                return insp->error = r;
        }
        tail_push(insp, p, step);
        insp->pos += step;
        r = post_process(insp);
        if (r < 0)
            return insp->error = r;
        p += step;
        size -= step;
    }
    return 0;
}

/* --- verdict ----------------------------------------------------------- */

/* What finish looks at: the captured bytes, read-only. */
struct judge {
    const struct yun_imgfmt_inspector *insp;
    const uint8_t *head;
    size_t head_size;
    uint8_t tail[TAIL_SIZE];      /* the last 'tail_size' bytes, in order */
    size_t tail_size;
    uint64_t size;                /* whole file */
    struct yun_imgfmt_result *res;
};

static void __attribute__((format(printf, 3, 4)))
reject(struct judge *j, enum yun_imgfmt_reject why, const char *fmt, ...)
{
    va_list ap;

    if (j->res->reject != YUN_IMGFMT_REJECT_NONE)
        return;
    j->res->reject = why;
    va_start(ap, fmt);
    vsnprintf(j->res->message, sizeof j->res->message, fmt, ap);
    va_end(ap);
}

static bool
head_has(const struct judge *j, size_t off, const char *magic, size_t len)
{
    return j->head_size >= off + len && memcmp(j->head + off, magic, len) == 0;
}

static bool
match_qcow2(const struct judge *j)
{
    return head_has(j, 0, "QFI\xfb", 4);
}

/* qemu's own probe for a text descriptor: comment lines and lines of
 * spaces, then "version=N". */
static bool
vmdk_text_probe(const uint8_t *p, size_t n)
{
    static const char *const versions[] = {
        "version=1\n", "version=2\n", "version=3\n",
        "version=1\r\n", "version=2\r\n", "version=3\r\n",
    };
    size_t i = 0;

    while (i < n) {
        if (p[i] == '#') {
            while (i < n && p[i] != '\n')
                i++;
            i++;
            continue;
        }
        if (p[i] == ' ') {
            while (i < n && p[i] == ' ')
                i++;
            if (i < n && p[i] == '\r')
                i++;
            if (i >= n || p[i] != '\n')
                return false;
            i++;
            continue;
        }
        for (size_t k = 0; k < ELEMENTSOF(versions); k++) {
            size_t len = strlen(versions[k]);
            if (n - i >= len && memcmp(p + i, versions[k], len) == 0)
                return true;
        }
        return false;
    }
    return false;
}

static bool
match_vmdk_text(const struct judge *j)
{
    return vmdk_text_probe(j->head, j->head_size);
}

static bool
match_vmdk(const struct judge *j)
{
    return head_has(j, 0, "KDMV", 4) || head_has(j, 0, "COWD", 4) || match_vmdk_text(j);
}

static bool
match_vhd_head(const struct judge *j)
{
    return head_has(j, 0, "conectix", 8);
}

static bool
match_vhd_tail(const struct judge *j)
{
    return j->tail_size >= 512 && memcmp(j->tail + j->tail_size - 512, "conectix", 8) == 0;
}

static bool
match_vhdx(const struct judge *j)
{
    return head_has(j, 0, "vhdxfile", 8);
}

static bool
match_vdi(const struct judge *j)
{
    return j->head_size >= 68 && rd_le32(j->head + 64) == VDI_SIGNATURE;
}

static bool
match_iso9660(const struct judge *j)
{
    return head_has(j, ISO_FIRST_VD * ISO_SECTOR + 1, "CD001", 5);
}

static bool
match_iso(const struct judge *j)
{
    if (match_iso9660(j))
        return true;
    /* UDF: its volume recognition sequence sits among the descriptors. */
    for (size_t k = ISO_FIRST_VD; (k + 1) * ISO_SECTOR <= HEAD_SIZE; k++)
        if (head_has(j, k * ISO_SECTOR + 1, "NSR02", 5) ||
            head_has(j, k * ISO_SECTOR + 1, "NSR03", 5))
            return true;
    return false;
}

/* Formats qemu can open but we never accept: QED (block/qed.c; it may name
 * a backing file) and LUKS (crypto/block-luks.c, versions 1 and 2; qemu's
 * luks driver would present the decrypted payload, not these bytes).
 * Neither is a disk_format, so the claim can never be right; detecting
 * them keeps a "raw" upload from being such a header, which qemu would
 * read differently if it ever probed the file (Glance refuses them too).
 * Any content starting with either magic is refused, whatever version or
 * other fields follow. Returns true and rejects 'j' when one matched. */
static bool
judge_unsupported(struct judge *j, enum yun_imgfmt claim)
{
    char what[64];

    if (head_has(j, 0, QED_MAGIC, 4)) {
        snprintf(what, sizeof what, "'qed' (QEMU enhanced disk)");
    } else if (head_has(j, 0, LUKS_MAGIC, 6)) {
        unsigned version = j->head_size >= 8 ? rd_be16(j->head + 6) : 0;

        if (version == 1 || version == 2)
            snprintf(what, sizeof what, "'luks' (a LUKS version %u encrypted volume)", version);
        else
            snprintf(what, sizeof what, "'luks' (a LUKS header of unknown version)");
    } else {
        return false;
    }
    if (claim >= 0)
        reject(j, YUN_IMGFMT_REJECT_UNSUPPORTED_FORMAT,
               "The image was declared as '%s' but its content is %s, a format that is "
               "not accepted.", imgfmt_names[claim], what);
    else
        reject(j, YUN_IMGFMT_REJECT_UNSUPPORTED_FORMAT,
               "The image's content is %s, a format that is not accepted.", what);
    return true;
}

/* An MBR boot signature or a GPT header (512- or 4096-byte sectors). Raw
 * disks have them; other formats must not, except inside the data. */
static bool
has_partition_table(const struct judge *j)
{
    return (j->head_size >= 512 && j->head[510] == 0x55 && j->head[511] == 0xaa) ||
           head_has(j, 512, "EFI PART", 8) || head_has(j, 4096, "EFI PART", 8);
}

static void
judge_qcow2(struct judge *j)
{
    const uint8_t *h = j->head;
    uint32_t version, cluster_bits, crypt, l1_size, hdr_len = 72, l2_bits;
    uint64_t backing, vsize, incompat = 0, l1_off, rt_off, cluster_size, need, end;
    unsigned shift;

    if (j->head_size < 72) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The qcow2 header is cut short.");
        return;
    }
    version = rd_be32(h + 4);
    if (version != 2 && version != 3) {
        reject(j, YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION,
               "The qcow2 version %" PRIu32 " is not supported; only versions 2 and 3 are.",
               version);
        return;
    }
    if (version == 3 && j->head_size < 104) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The qcow2 header is cut short.");
        return;
    }
    backing = rd_be64(h + 8);
    if (backing != 0) {
        reject(j, YUN_IMGFMT_REJECT_BACKING_FILE,
               "The qcow2 image names a backing file; images must be self-contained.");
        return;
    }
    if (version == 3) {
        incompat = rd_be64(h + 72);
        hdr_len = rd_be32(h + 100);
        if (incompat & QCOW2_INCOMPAT_DATA_FILE) {
            reject(j, YUN_IMGFMT_REJECT_DATA_FILE,
                   "The qcow2 image keeps its data in an external data file; "
                   "images must be self-contained.");
            return;
        }
        if (incompat & ~QCOW2_INCOMPAT_KNOWN) {
            reject(j, YUN_IMGFMT_REJECT_UNKNOWN_FEATURES,
                   "The qcow2 image uses unknown incompatible features (bits 0x%" PRIx64 ").",
                   incompat & ~QCOW2_INCOMPAT_KNOWN);
            return;
        }
        if (incompat & QCOW2_INCOMPAT_CORRUPT) {
            reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The qcow2 image is marked corrupt by qemu.");
            return;
        }
    }

    cluster_bits = rd_be32(h + 20);
    if (cluster_bits < 9 || cluster_bits > 21) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The qcow2 cluster size of 2^%" PRIu32 " bytes is out of range.", cluster_bits);
        return;
    }
    cluster_size = UINT64_C(1) << cluster_bits;
    if (version == 3) {
        if (hdr_len < 104 || hdr_len > cluster_size) {
            reject(j, YUN_IMGFMT_REJECT_CORRUPT,
                   "The qcow2 header length of %" PRIu32 " bytes is invalid.", hdr_len);
            return;
        }
        if (rd_be32(h + 96) > 6) {
            reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The qcow2 refcount width is invalid.");
            return;
        }
        if (hdr_len > 104) {
            uint8_t ct;

            if (j->head_size < 105) {
                reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The qcow2 header is cut short.");
                return;
            }
            ct = h[104];
            if (ct > 1) {
                reject(j, YUN_IMGFMT_REJECT_UNKNOWN_FEATURES,
                       "The qcow2 image uses an unknown compression type %u.", (unsigned)ct);
                return;
            }
            if (ct != 0 && !(incompat & QCOW2_INCOMPAT_COMPRESSION)) {
                reject(j, YUN_IMGFMT_REJECT_CORRUPT,
                       "The qcow2 compression type is set without its feature bit.");
                return;
            }
        }
    }
    crypt = rd_be32(h + 32);
    if (crypt > 2) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The qcow2 encryption method %" PRIu32 " is invalid.", crypt);
        return;
    }

    vsize = rd_be64(h + 24);
    l1_size = rd_be32(h + 36);
    l1_off = rd_be64(h + 40);
    rt_off = rd_be64(h + 48);
    /* Each L1 entry maps one L2 table's worth of clusters; qemu refuses an
     * L1 table too small for the virtual size, or too large. */
    l2_bits = cluster_bits - ((incompat & QCOW2_INCOMPAT_EXTL2) ? 4 : 3);
    shift = cluster_bits + l2_bits;
    need = (vsize >> shift) + ((vsize & ((UINT64_C(1) << shift) - 1)) ? 1 : 0);
    if (l1_size < need || l1_size > QCOW2_MAX_L1_ENTRIES) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The qcow2 L1 table size does not fit the virtual size.");
        return;
    }
    if ((l1_off & (cluster_size - 1)) || (rt_off & (cluster_size - 1)) || rt_off == 0 ||
        rd_be32(h + 56) == 0) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The qcow2 metadata tables are misplaced.");
        return;
    }
    if (l1_size > 0 &&
        (__builtin_add_overflow(l1_off, (uint64_t)l1_size * 8, &end) || end > j->size)) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
               "The qcow2 image is cut short: its L1 table lies past the end of the file.");
        return;
    }
    if (rt_off >= j->size) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
               "The qcow2 image is cut short: its refcount table lies past the end of the file.");
        return;
    }
    j->res->virtual_size = vsize;
}

struct vmdk_header {
    uint32_t version, flags, num_gtes;
    uint64_t capacity, granularity, desc_offset, desc_size, gd_offset, grain_offset;
    uint16_t compress;
    uint8_t check[4];
};

/* 's' is a 512-byte sector starting with the "KDMV" magic. */
static void
vmdk_header_read(const uint8_t *s, struct vmdk_header *h)
{
    h->version = rd_le32(s + 4);
    h->flags = rd_le32(s + 8);
    h->capacity = rd_le64(s + 12);
    h->granularity = rd_le64(s + 20);
    h->desc_offset = rd_le64(s + 28);
    h->desc_size = rd_le64(s + 36);
    h->num_gtes = rd_le32(s + 44);
    h->gd_offset = rd_le64(s + 56);
    h->grain_offset = rd_le64(s + 64);
    memcpy(h->check, s + 73, 4);
    h->compress = rd_le16(s + 77);
}

struct vmdk_desc {
    bool bad_text;              /* bytes other than printable ASCII and whitespace */
    bool has_parent;            /* parentFileNameHint, or a parentCID */
    unsigned bad_line;          /* first line we do not understand, 1-based; 0 if none */
    bool has_create_type;
    char create_type[48];       /* sanitised */
    unsigned n_extents;
    char extent_type[16];       /* of the first extent, sanitised */
    bool extent_has_file;       /* the first extent names a file */
    uint64_t extent_sectors;    /* of the first extent */
    bool any_file;              /* some extent names a file */
    bool unsafe_name;           /* some extent's file name is a path */
    char file[64];              /* first file named, sanitised */
};

static bool
is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static void
trim(const char **s, size_t *n)
{
    while (*n > 0 && is_blank(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_blank((*s)[*n - 1]))
        (*n)--;
}

static bool
word_is(const char *s, size_t n, const char *word)
{
    return n == strlen(word) && strncasecmp(s, word, n) == 0;
}

static bool
mem_has_nocase(const char *s, size_t n, const char *needle)
{
    size_t len = strlen(needle);

    for (size_t i = 0; i + len <= n; i++)
        if (strncasecmp(s + i, needle, len) == 0)
            return true;
    return false;
}

/* "ACCESS SECTORS TYPE ["FILE" [OFFSET]]". Returns false if malformed. */
static bool
vmdk_parse_extent(struct vmdk_desc *d, const char *s, size_t n)
{
    size_t i = 0, start;
    uint64_t sectors = 0;
    const char *type, *file = NULL;
    size_t type_len, file_len = 0;

    while (i < n && !is_blank(s[i]))
        i++;
    while (i < n && is_blank(s[i]))
        i++;
    start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (__builtin_mul_overflow(sectors, 10, &sectors) ||
            __builtin_add_overflow(sectors, (uint64_t)(s[i] - '0'), &sectors))
            return false;
        i++;
    }
    if (i == start || i >= n || !is_blank(s[i]))
        return false;
    while (i < n && is_blank(s[i]))
        i++;
    type = s + i;
    while (i < n && !is_blank(s[i]) && s[i] != '"')
        i++;
    type_len = (size_t)(s + i - type);
    if (type_len == 0)
        return false;
    while (i < n && is_blank(s[i]))
        i++;
    if (i < n) {
        if (s[i] != '"')
            return false;
        file = s + ++i;
        while (i < n && s[i] != '"')
            i++;
        if (i >= n)
            return false;
        file_len = (size_t)(s + i - file);
        i++;
        if (i < n) {
            /* An optional offset, for FLAT extents. */
            if (!is_blank(s[i]))
                return false;
            while (i < n && is_blank(s[i]))
                i++;
            while (i < n && s[i] >= '0' && s[i] <= '9')
                i++;
            if (i != n)
                return false;
        }
    }

    if (d->n_extents++ == 0) {
        sanitize(d->extent_type, sizeof d->extent_type, type, type_len);
        d->extent_sectors = sectors;
        d->extent_has_file = file != NULL;
    }
    if (file) {
        if (!d->any_file)
            sanitize(d->file, sizeof d->file, file, file_len);
        d->any_file = true;
        if (file_len == 0 || memchr(file, '/', file_len) || memchr(file, '\\', file_len) ||
            memchr(file, ':', file_len))
            d->unsafe_name = true;
    }
    return true;
}

static void
vmdk_parse_line(struct vmdk_desc *d, const char *s, size_t n, unsigned lineno)
{
    size_t w = 0;
    const char *eq;

    trim(&s, &n);
    if (n == 0 || s[0] == '#' || (n >= 4 && strncasecmp(s, "ddb.", 4) == 0))
        return;
    while (w < n && !is_blank(s[w]) && s[w] != '=')
        w++;
    if (w < n && is_blank(s[w]) &&
        (word_is(s, w, "RW") || word_is(s, w, "RDONLY") || word_is(s, w, "NOACCESS"))) {
        if (!vmdk_parse_extent(d, s, n) && !d->bad_line)
            d->bad_line = lineno;
        return;
    }
    eq = memchr(s, '=', n);
    if (eq) {
        const char *key = s, *val = eq + 1;
        size_t key_len = (size_t)(eq - s), val_len = n - key_len - 1;

        trim(&key, &key_len);
        trim(&val, &val_len);
        if (key_len > 0 && !memchr(key, ' ', key_len) && !memchr(key, '\t', key_len)) {
            if (val_len >= 2 && val[0] == '"' && val[val_len - 1] == '"') {
                val++;
                val_len -= 2;
            }
            if (word_is(key, key_len, "createType")) {
                d->has_create_type = true;
                sanitize(d->create_type, sizeof d->create_type, val, val_len);
                if (val_len >= sizeof d->create_type)
                    d->create_type[0] = '?';  /* too long to be a type we accept */
            } else if (word_is(key, key_len, "parentCID") && !word_is(val, val_len, "ffffffff")) {
                d->has_parent = true;
            }
            return;
        }
    }
    if (!d->bad_line)
        d->bad_line = lineno;
}

/* Parses descriptor text the way Glance's hardened check does: every line
 * must be a comment, a ddb entry, a "key=value" field or an extent. */
static void
vmdk_parse_descriptor(const char *text, size_t len, struct vmdk_desc *d)
{
    size_t start = 0;
    unsigned lineno = 0;

    memset(d, 0, sizeof *d);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!(c == '\t' || c == '\n' || c == '\r' || (c >= 0x20 && c < 0x7f))) {
            d->bad_text = true;
            return;
        }
    }
    /* qemu looks for the parent with a plain substring search. */
    if (mem_has_nocase(text, len, "parentFileNameHint"))
        d->has_parent = true;
    while (start < len) {
        size_t end = start;

        while (end < len && text[end] != '\n')
            end++;
        vmdk_parse_line(d, text + start, end - start, ++lineno);
        start = end + 1;
    }
}

/* A text-only VMDK is a descriptor whose data lives in other files: never
 * acceptable, the question is only which reason to give. */
static void
judge_vmdk_text(struct judge *j)
{
    const uint8_t *nul = memchr(j->head, 0, j->head_size);
    size_t len = nul ? (size_t)(nul - j->head) : j->head_size;
    struct vmdk_desc d;

    vmdk_parse_descriptor((const char *)j->head, len, &d);
    if (d.any_file)
        reject(j, YUN_IMGFMT_REJECT_VMDK_EXTENT,
               "The VMDK is a descriptor file whose data lives in other files (such as '%s'); "
               "only single-file VMDKs are accepted.", d.file);
    else
        reject(j, YUN_IMGFMT_REJECT_VMDK_SUBFORMAT,
               "The VMDK is a descriptor file without data of its own; only single-file "
               "VMDKs (monolithicSparse, streamOptimized) are accepted.");
}

static bool
vmdk_check_descriptor(struct judge *j, uint64_t capacity)
{
    const struct region *r = &j->insp->regions[R_VMDK_DESC];
    const uint8_t *nul;
    size_t len;
    struct vmdk_desc d;

    if (!r->active || r->have == 0) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The VMDK ends before its descriptor.");
        return false;
    }
    nul = memchr(r->data, 0, r->have);
    len = nul ? (size_t)(nul - r->data) : r->have;
    vmdk_parse_descriptor((const char *)r->data, len, &d);

    if (d.bad_text) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VMDK descriptor is not plain text.");
        return false;
    }
    if (d.has_parent) {
        reject(j, YUN_IMGFMT_REJECT_BACKING_FILE,
               "The VMDK descriptor names a parent image; images must be self-contained.");
        return false;
    }
    if (d.bad_line) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The VMDK descriptor has an unrecognised line (line %u).", d.bad_line);
        return false;
    }
    if (!d.has_create_type) {
        reject(j, YUN_IMGFMT_REJECT_VMDK_SUBFORMAT,
               "The VMDK descriptor has no createType; only monolithicSparse and "
               "streamOptimized VMDKs are accepted.");
        return false;
    }
    if (strcasecmp(d.create_type, "monolithicSparse") != 0 &&
        strcasecmp(d.create_type, "streamOptimized") != 0) {
        reject(j, YUN_IMGFMT_REJECT_VMDK_SUBFORMAT,
               "The VMDK subformat '%s' is not accepted; only monolithicSparse and "
               "streamOptimized are.", d.create_type);
        return false;
    }
    if (d.n_extents != 1) {
        reject(j, YUN_IMGFMT_REJECT_VMDK_EXTENT,
               "The VMDK descriptor lists %u extents; a single-file VMDK has exactly one, "
               "the image itself.", d.n_extents);
        return false;
    }
    if (strcasecmp(d.extent_type, "SPARSE") != 0) {
        reject(j, YUN_IMGFMT_REJECT_VMDK_EXTENT,
               "The VMDK descriptor's extent is of type '%s'; only the image's own SPARSE "
               "extent is accepted.", d.extent_type);
        return false;
    }
    if (!d.extent_has_file || d.unsafe_name) {
        reject(j, YUN_IMGFMT_REJECT_VMDK_EXTENT,
               "The VMDK descriptor's extent names '%s', which is not the image itself.",
               d.file);
        return false;
    }
    if (d.extent_sectors != capacity) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The VMDK descriptor's extent size does not match the header's capacity.");
        return false;
    }
    return true;
}

static void
judge_vmdk(struct judge *j)
{
    struct vmdk_header h, foot;
    uint64_t l1_entry_sectors, l1_size, vsize, end;

    if (head_has(j, 0, "COWD", 4)) {
        reject(j, YUN_IMGFMT_REJECT_VMDK_SUBFORMAT,
               "The VMDK uses the old VMware 3 (COWD) sparse format, which is not accepted.");
        return;
    }
    if (!head_has(j, 0, "KDMV", 4)) {
        judge_vmdk_text(j);
        return;
    }
    if (j->head_size < 512) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The VMDK header is cut short.");
        return;
    }
    vmdk_header_read(j->head, &h);
    if (h.version < 1 || h.version > 3) {
        reject(j, YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION,
               "The VMDK version %" PRIu32 " is not supported.", h.version);
        return;
    }
    /* With a zero capacity qemu treats the embedded descriptor as the
     * disk's descriptor file and opens the extents it names
     * (CVE-2022-47951). */
    if (h.capacity == 0 && h.desc_offset != 0) {
        reject(j, YUN_IMGFMT_REJECT_VMDK_EXTENT,
               "The VMDK header has no capacity, which would make its embedded descriptor "
               "name the disk's extents; this is not accepted.");
        return;
    }
    if (h.desc_offset == 0) {
        reject(j, YUN_IMGFMT_REJECT_VMDK_SUBFORMAT,
               "The VMDK has no embedded descriptor: it is one extent of a multi-file VMDK.");
        return;
    }
    /* qemu reads the descriptor (and looks for a parent) at byte 512
     * whatever the header says, so anything else would hide it. */
    if (h.desc_offset != 1 || h.desc_size == 0 || h.desc_size > VMDK_DESC_MAX_SECTORS) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The VMDK descriptor is not where qemu reads it (sector %" PRIu64
               ", %" PRIu64 " sectors).", h.desc_offset, h.desc_size);
        return;
    }
    if ((h.flags & VMDK_FLAG_NL_DETECT) && memcmp(h.check, "\n \r\n", 4) != 0) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The VMDK was damaged by a text-mode transfer (newline conversion).");
        return;
    }
    if (h.gd_offset == VMDK_GD_AT_END) {
        /* streamOptimized written as a stream: the footer, which qemu
         * reads instead of the header, sits in the last three sectors. */
        const uint8_t *t = j->tail;

        if (j->size < 512 + TAIL_SIZE || j->tail_size < TAIL_SIZE ||
            rd_le32(t + 8) != 0 || rd_le32(t + 12) != VMDK_MARKER_FOOTER ||
            memcmp(t + 512, "KDMV", 4) != 0 || rd_le64(t + 1024) != 0 ||
            rd_le32(t + 1032) != 0 || rd_le32(t + 1036) != VMDK_MARKER_EOS) {
            reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
                   "The streamOptimized VMDK does not end with its footer and end-of-stream "
                   "marker; the image looks truncated.");
            return;
        }
        vmdk_header_read(t + 512, &foot);
        if (foot.version != h.version || foot.desc_offset != h.desc_offset ||
            foot.desc_size != h.desc_size || foot.gd_offset == VMDK_GD_AT_END) {
            reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VMDK footer does not agree with its header.");
            return;
        }
        h = foot;
    }
    if (!vmdk_check_descriptor(j, h.capacity))
        return;

    if (h.capacity == 0) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VMDK has a capacity of zero.");
        return;
    }
    if (h.num_gtes == 0 || h.num_gtes > 512 || h.granularity == 0 ||
        h.granularity > VMDK_MAX_GRANULARITY) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VMDK grain table geometry is invalid.");
        return;
    }
    l1_entry_sectors = (uint64_t)h.num_gtes * h.granularity;
    l1_size = h.capacity / l1_entry_sectors + (h.capacity % l1_entry_sectors ? 1 : 0);
    if (l1_size > VMDK_MAX_L1_SIZE) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VMDK grain directory is too large.");
        return;
    }
    if (h.compress > 1) {
        reject(j, YUN_IMGFMT_REJECT_UNKNOWN_FEATURES,
               "The VMDK uses an unknown compression algorithm %u.", (unsigned)h.compress);
        return;
    }
    if (__builtin_mul_overflow(h.capacity, 512, &vsize)) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VMDK capacity is out of range.");
        return;
    }
    if (__builtin_mul_overflow(h.grain_offset, 512, &end) || end > j->size) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
               "The VMDK is cut short: its data starts past the end of the file.");
        return;
    }
    if (__builtin_mul_overflow(h.gd_offset, 512, &end) ||
        __builtin_add_overflow(end, l1_size * 4, &end) || end > j->size) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
               "The VMDK is cut short: its grain directory lies past the end of the file.");
        return;
    }
    j->res->virtual_size = vsize;
}

/* One's complement of the byte sum, with the checksum field as zero. */
static bool
vhd_footer_checksum_ok(const uint8_t *f)
{
    uint32_t sum = 0;

    for (size_t i = 0; i < 512; i++)
        if (i < 64 || i >= 68)
            sum += f[i];
    return (uint32_t)~sum == rd_be32(f + 64);
}

/* qemu's rule: Virtual PC and qemu size the disk by its CHS geometry;
 * Hyper-V, disk2vhd, XenServer/XenConverter and qemu with force_size by
 * the footer's current size; the maximum geometry means "use the size". */
static uint64_t
vhd_sectors(const uint8_t *f)
{
    static const char *const size_creators[] = { "win ", "qem2", "d2v ", "CTXS" };
    uint64_t chs = (uint64_t)rd_be16(f + 56) * f[58] * f[59];
    bool use_chs = memcmp(f + 28, "tap\0", 4) != 0;

    for (size_t i = 0; i < ELEMENTSOF(size_creators); i++)
        if (memcmp(f + 28, size_creators[i], 4) == 0)
            use_chs = false;
    if (!use_chs || chs == VHD_MAX_GEOMETRY)
        return rd_be64(f + 48) / 512;
    return chs;
}

static void
judge_vhd(struct judge *j)
{
    bool dynamic = match_vhd_head(j);
    const uint8_t *f;
    uint32_t type;
    uint64_t sectors, vsize;

    if (dynamic) {
        if (j->head_size < 512) {
            reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The VHD footer is cut short.");
            return;
        }
        f = j->head;
    } else {
        f = j->tail + j->tail_size - 512;
    }
    if (!vhd_footer_checksum_ok(f)) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VHD footer checksum is wrong.");
        return;
    }
    type = rd_be32(f + 60);
    if (type == VHD_TYPE_DIFF) {
        reject(j, YUN_IMGFMT_REJECT_BACKING_FILE,
               "The VHD is a differencing disk with a parent image; images must be "
               "self-contained.");
        return;
    }
    if (type != (dynamic ? VHD_TYPE_DYNAMIC : VHD_TYPE_FIXED)) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The VHD footer %s of the file has disk type %" PRIu32 "; expected a %s disk.",
               dynamic ? "at the start" : "at the end", type, dynamic ? "dynamic" : "fixed");
        return;
    }
    sectors = vhd_sectors(f);
    if (sectors > VHD_MAX_SECTORS) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT,
               "The VHD is larger than the format's limit of 2040 GiB.");
        return;
    }
    vsize = sectors * 512;

    if (!dynamic) {
        if (j->size - 512 < vsize) {
            reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
                   "The fixed VHD is cut short: it holds fewer bytes than its disk size.");
            return;
        }
    } else {
        uint64_t off = rd_be64(f + 16), bat, bat_end;
        uint32_t block, entries;
        const uint8_t *d;

        if (off > HEAD_SIZE - VHD_DYN_HEADER_SIZE) {
            reject(j, YUN_IMGFMT_REJECT_CORRUPT,
                   "The VHD dynamic header lies at byte %" PRIu64
                   ", outside the first 64 KiB of the file.", off);
            return;
        }
        if (off + VHD_DYN_HEADER_SIZE > j->head_size) {
            reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The VHD ends before its dynamic header.");
            return;
        }
        d = j->head + off;
        if (memcmp(d, "cxsparse", 8) != 0) {
            reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VHD dynamic header signature is missing.");
            return;
        }
        block = rd_be32(d + 32);
        entries = rd_be32(d + 28);
        if (!is_pow2(block) || block < 512 || vsize / block > UINT32_MAX ||
            (uint64_t)entries * block < vsize) {
            reject(j, YUN_IMGFMT_REJECT_CORRUPT,
                   "The VHD block table does not fit the disk size.");
            return;
        }
        bat = rd_be64(d + 16);
        if (__builtin_add_overflow(bat, (uint64_t)entries * 4, &bat_end) || bat_end > j->size) {
            reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
                   "The VHD is cut short: its block table lies past the end of the file.");
            return;
        }
        /* A dynamic VHD ends with a copy of its footer; without it the
         * file was cut. */
        if (j->size < 512 + VHD_DYN_HEADER_SIZE + 512 || !match_vhd_tail(j)) {
            reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
                   "The dynamic VHD does not end with its footer copy; the image looks "
                   "truncated.");
            return;
        }
    }
    j->res->virtual_size = vsize;
}

static void
judge_vhdx(struct judge *j)
{
    const struct yun_imgfmt_inspector *insp = j->insp;
    const struct region *size_r = &insp->regions[R_VHDX_DISK_SIZE];
    const struct region *params_r = &insp->regions[R_VHDX_PARAMS];
    uint32_t block, flags;

    if (insp->vhdx.reject != YUN_IMGFMT_REJECT_NONE) {
        reject(j, insp->vhdx.reject, "%s", insp->vhdx.message);
        return;
    }
    if (!region_complete(&insp->regions[R_VHDX_RT])) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The VHDX image ends before its region table.");
        return;
    }
    if (!region_complete(&insp->regions[R_VHDX_MT]) || !region_complete(size_r) ||
        !region_complete(params_r)) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The VHDX image ends before its metadata.");
        return;
    }
    flags = rd_le32(params_r->data + 4);
    if ((flags & VHDX_PARAMS_HAS_PARENT) || insp->vhdx.has_parent_locator) {
        reject(j, YUN_IMGFMT_REJECT_BACKING_FILE,
               "The VHDX is a differencing disk with a parent image; images must be "
               "self-contained.");
        return;
    }
    block = rd_le32(params_r->data);
    if (!is_pow2(block) || block < MIB || block > 256 * MIB) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VHDX block size is invalid.");
        return;
    }
    if (insp->vhdx.regions_end > j->size) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
               "The VHDX is cut short: its regions extend past the end of the file.");
        return;
    }
    j->res->virtual_size = rd_le64(size_r->data);
}

static void
judge_vdi(struct judge *j)
{
    const uint8_t *h = j->head;
    uint32_t version, type, bmap_off, data_off, sector_size, block_size, blocks;
    uint64_t disk_size, bmap_end;

    if (j->head_size < VDI_HEADER_SIZE) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The VDI header is cut short.");
        return;
    }
    version = rd_le32(h + 68);
    if (version != VDI_VERSION_1_1) {
        reject(j, YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION,
               "The VDI version %" PRIu32 ".%" PRIu32 " is not supported; only 1.1 is.",
               version >> 16, version & 0xffff);
        return;
    }
    type = rd_le32(h + 76);
    if (type == 3 || type == 4 || !all_zero(h + 424, 32)) {
        reject(j, YUN_IMGFMT_REJECT_BACKING_FILE,
               "The VDI is a differencing image with a parent; images must be "
               "self-contained.");
        return;
    }
    if (type != 1 && type != 2) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VDI image type %" PRIu32 " is invalid.", type);
        return;
    }
    bmap_off = rd_le32(h + 340);
    data_off = rd_le32(h + 344);
    sector_size = rd_le32(h + 360);
    disk_size = rd_le64(h + 368);
    block_size = rd_le32(h + 376);
    blocks = rd_le32(h + 384);
    if (bmap_off % 512 || data_off % 512 || sector_size != 512 || block_size != VDI_BLOCK_SIZE ||
        blocks > VDI_MAX_BLOCKS || disk_size > (uint64_t)blocks * block_size) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The VDI header has an unsupported layout.");
        return;
    }
    bmap_end = (uint64_t)bmap_off + (uint64_t)blocks * 4;
    if (bmap_end > j->size || data_off > j->size) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
               "The VDI is cut short: its block map lies past the end of the file.");
        return;
    }
    /* qemu rounds odd sizes (VBoxManage makes them) up to a sector. */
    j->res->virtual_size = (disk_size + 511) / 512 * 512;
}

static void
judge_iso(struct judge *j)
{
    const uint8_t *pvd = NULL;
    bool cut = false;
    uint32_t blocks;
    uint16_t block_size;
    uint64_t vsize;

    if (!match_iso9660(j)) {
        /* UDF without an ISO 9660 bridge: the size is in structures far
         * from the start; the disc is read as the file it is. */
        j->res->virtual_size = j->size;
        return;
    }
    for (size_t k = ISO_FIRST_VD; (k + 1) * ISO_SECTOR <= HEAD_SIZE; k++) {
        const uint8_t *d = j->head + k * ISO_SECTOR;

        if ((k + 1) * ISO_SECTOR > j->head_size) {
            cut = true;
            break;
        }
        if (memcmp(d + 1, "CD001", 5) != 0)
            continue;
        if (d[0] == 1) {
            pvd = d;
            break;
        }
        if (d[0] == 255)
            break;
    }
    if (!pvd) {
        if (cut)
            reject(j, YUN_IMGFMT_REJECT_TRUNCATED, "The ISO ends inside its volume descriptors.");
        else
            reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The ISO has no primary volume descriptor.");
        return;
    }
    /* Both-endian fields: the halves must agree. */
    blocks = rd_le32(pvd + 80);
    block_size = rd_le16(pvd + 128);
    if (blocks != rd_be32(pvd + 84) || block_size != rd_be16(pvd + 130) ||
        !is_pow2(block_size) || block_size < 512 || block_size > ISO_SECTOR) {
        reject(j, YUN_IMGFMT_REJECT_CORRUPT, "The ISO primary volume descriptor is invalid.");
        return;
    }
    vsize = (uint64_t)blocks * block_size;
    if (vsize > j->size) {
        reject(j, YUN_IMGFMT_REJECT_TRUNCATED,
               "The ISO is cut short: its volume is %" PRIu64 " bytes but the file has %" PRIu64
               ".", vsize, j->size);
        return;
    }
    j->res->virtual_size = vsize;
}

/* Judges the bytes fed so far as a whole image under 'policy' (NULL: detect
 * only). Does not change 'insp': it may be called again, with another
 * policy or after more bytes. Returns 0 and fills '*ret' — check
 * 'ret->reject' — or -EINVAL for a bad argument or an unknown claimed
 * format, or the error that stopped feeding (-ENOMEM, -EOVERFLOW). */
int
yun_imgfmt_finish(const struct yun_imgfmt_inspector *insp,
                  const struct yun_imgfmt_policy *policy,
                  struct yun_imgfmt_result *ret)
{
    struct yun_imgfmt_result res = { .format = YUN_IMGFMT_RAW };
    struct judge j = { .insp = insp, .res = &res };
    enum yun_imgfmt claim = _YUN_IMGFMT_INVALID, found[6];
    size_t n = 0;
    uint64_t start, limit_size;

    if (!insp || !ret)
        return -EINVAL;
    if (insp->error < 0)
        return insp->error;
    if (policy && policy->claimed_format && strcmp(policy->claimed_format, "auto") != 0) {
        claim = yun_imgfmt_from_string(policy->claimed_format);
        if (claim < 0)
            return -EINVAL;
    }

    j.head = insp->head;
    j.head_size = (size_t)MIN(insp->pos, (uint64_t)HEAD_SIZE);
    j.size = insp->pos;
    j.tail_size = (size_t)MIN(insp->pos, (uint64_t)TAIL_SIZE);
    start = insp->pos - j.tail_size;
    for (size_t i = 0; i < j.tail_size; i++)
        j.tail[i] = insp->tail[(start + i) % TAIL_SIZE];
    res.actual_size = insp->pos;

    /* Before anything else: whatever else such content also looks like,
     * and whatever was claimed, it is refused as what it starts with. */
    if (judge_unsupported(&j, claim)) {
        *ret = res;
        return 0;
    }

    if (match_qcow2(&j))
        found[n++] = YUN_IMGFMT_QCOW2;
    if (match_vmdk(&j))
        found[n++] = YUN_IMGFMT_VMDK;
    if (match_vhd_head(&j) || match_vhd_tail(&j))
        found[n++] = YUN_IMGFMT_VHD;
    if (match_vhdx(&j))
        found[n++] = YUN_IMGFMT_VHDX;
    if (match_vdi(&j))
        found[n++] = YUN_IMGFMT_VDI;
    if (match_iso(&j))
        found[n++] = YUN_IMGFMT_ISO;
    if (n > 0)
        res.format = found[0];

    /* Content that two parsers read differently is how one header hides
     * behind another: refuse it rather than guess which one wins. */
    if (n > 1) {
        char names[96] = "";
        size_t used = 0;

        for (size_t i = 0; i < n; i++) {
            int w = snprintf(names + used, sizeof names - used, "%s'%s'",
                             i == 0 ? "" : (i + 1 == n ? " and " : ", "),
                             imgfmt_names[found[i]]);
            if (w < 0 || (size_t)w >= sizeof names - used)
                break;
            used += (size_t)w;
        }
        reject(&j, YUN_IMGFMT_REJECT_MULTIPLE_FORMATS,
               "The image matches more than one format (%s); such images are refused.", names);
    } else if (n == 1 && has_partition_table(&j)) {
        if (res.format == YUN_IMGFMT_ISO) {
            if (!policy || !policy->allow_hybrid_iso)
                reject(&j, YUN_IMGFMT_REJECT_MULTIPLE_FORMATS,
                       "The image is an ISO that also carries a partition table (a hybrid "
                       "ISO), which is not allowed here.");
        } else if (res.format != YUN_IMGFMT_VHD || match_vhd_head(&j)) {
            /* A fixed VHD is a raw disk plus a footer: its partition table
             * is its content. Other formats start with their header. */
            reject(&j, YUN_IMGFMT_REJECT_MULTIPLE_FORMATS,
                   "The image is '%s' but also starts with a partition table; such images "
                   "are refused.", imgfmt_names[res.format]);
        }
    }

    if (claim >= 0) {
        enum yun_imgfmt want = claim;

        if (claim == YUN_IMGFMT_AKI || claim == YUN_IMGFMT_ARI)
            want = YUN_IMGFMT_RAW;
        if (want != res.format)
            reject(&j, YUN_IMGFMT_REJECT_FORMAT_MISMATCH,
                   "The image was declared as '%s' but its content is '%s'.",
                   imgfmt_names[claim], imgfmt_names[res.format]);
    }

    if (res.reject == YUN_IMGFMT_REJECT_NONE) {
        switch (res.format) {
        case YUN_IMGFMT_QCOW2:
            judge_qcow2(&j);
            break;
        case YUN_IMGFMT_VMDK:
            judge_vmdk(&j);
            break;
        case YUN_IMGFMT_VHD:
            judge_vhd(&j);
            break;
        case YUN_IMGFMT_VHDX:
            judge_vhdx(&j);
            break;
        case YUN_IMGFMT_VDI:
            judge_vdi(&j);
            break;
        case YUN_IMGFMT_ISO:
            judge_iso(&j);
            break;
        default:
            res.virtual_size = res.actual_size;
            break;
        }
    }

    /* An ISO is read as the file it is: bound both sizes. */
    limit_size = res.virtual_size;
    if (res.format == YUN_IMGFMT_ISO && res.actual_size > limit_size)
        limit_size = res.actual_size;
    if (res.reject == YUN_IMGFMT_REJECT_NONE && policy && policy->max_virtual_size &&
        limit_size > policy->max_virtual_size)
        reject(&j, YUN_IMGFMT_REJECT_TOO_LARGE,
               "The image's virtual size of %" PRIu64 " bytes is above the limit of %" PRIu64
               " bytes.", limit_size, policy->max_virtual_size);

    *ret = res;
    return 0;
}

/* Reads 'fd' from its current offset to the end in chunks and judges it
 * (see yun_imgfmt_finish). Does not close 'fd'. Returns 0 and '*ret', or a
 * negative errno from read(2) or yun_imgfmt_finish. */
int
yun_imgfmt_inspect_fd(int fd, const struct yun_imgfmt_policy *policy,
                      struct yun_imgfmt_result *ret)
{
    _cleanup_(yun_imgfmt_inspector_freep) struct yun_imgfmt_inspector *insp = NULL;
    _cleanup_free_ uint8_t *buf = NULL;
    int r;

    if (fd < 0 || !ret)
        return -EINVAL;
    r = yun_imgfmt_inspector_new(&insp);
    if (r < 0)
        return r;
    buf = malloc(READ_CHUNK);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t n = read(fd, buf, READ_CHUNK);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        r = yun_imgfmt_feed(insp, buf, (size_t)n);
        if (r < 0)
            return r;
    }
    return yun_imgfmt_finish(insp, policy, ret);
}

/* Opens 'path' read-only and judges it (see yun_imgfmt_inspect_fd).
 * Returns 0 and '*ret', or a negative errno (-ENOENT, ...). */
int
yun_imgfmt_inspect_file(const char *path, const struct yun_imgfmt_policy *policy,
                        struct yun_imgfmt_result *ret)
{
    _cleanup_close_ int fd = -EBADF;

    if (!path || !ret)
        return -EINVAL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    return yun_imgfmt_inspect_fd(fd, policy, ret);
}
