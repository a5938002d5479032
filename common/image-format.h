/* SPDX-License-Identifier: Apache-2.0
 * image-format.h: disk image format inspector. The image service runs every
 * upload through it and compute agents run it again before handing a file
 * to qemu, so that an image is what it claims to be and cannot make qemu
 * open other files (backing files, qcow2 external data files, VMDK extents).
 * The role of Glance's format_inspector; our own code.
 *
 * It detects raw, qcow2, vmdk, vhd (qemu's "vpc"), vhdx, vdi and iso and
 * reports the virtual size. It also recognises QED and LUKS headers, formats
 * qemu would open but that are not accepted here, and refuses them whatever
 * was claimed (YUN_IMGFMT_REJECT_UNSUPPORTED_FORMAT). It is streaming: bytes
 * are fed in chunks of any size as they arrive, the whole image is never
 * buffered, and the verdict does not depend on how the stream was cut into
 * chunks.
 *
 * Memory: about 66 KiB per inspector, plus up to 1 MiB for a VMDK embedded
 * descriptor and 128 KiB for VHDX tables, only when the image is of that
 * kind.
 *
 * Neighbours: scheduler/image.c (upload), agent/image-cache.c (before use).
 * Only pure code: no logging, no threads; one inspector per stream. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct yun_imgfmt_inspector;

/* Disk formats, as Glance's disk_format names them. aki and ari are raw
 * kernel and ramdisk images: they are accepted as claims and must detect as
 * raw; detection itself never reports them. */
enum yun_imgfmt {
    YUN_IMGFMT_RAW,
    YUN_IMGFMT_QCOW2,
    YUN_IMGFMT_VMDK,
    YUN_IMGFMT_VHD,
    YUN_IMGFMT_VHDX,
    YUN_IMGFMT_VDI,
    YUN_IMGFMT_ISO,
    YUN_IMGFMT_AKI,
    YUN_IMGFMT_ARI,
    _YUN_IMGFMT_MAX,
    _YUN_IMGFMT_INVALID = -EINVAL,
};

/* Why an image was rejected. The names ("format-mismatch", ...) are a
 * stable interface: they travel in replies and scripts may test them.
 * Append only. */
enum yun_imgfmt_reject {
    YUN_IMGFMT_REJECT_NONE,                /* accepted */
    YUN_IMGFMT_REJECT_FORMAT_MISMATCH,     /* claimed format is not the content's */
    YUN_IMGFMT_REJECT_MULTIPLE_FORMATS,    /* content matches two formats at once */
    YUN_IMGFMT_REJECT_TRUNCATED,           /* the file ends before its metadata does */
    YUN_IMGFMT_REJECT_CORRUPT,             /* header fields out of range or inconsistent */
    YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION, /* e.g. qcow2 other than 2 and 3 */
    YUN_IMGFMT_REJECT_UNKNOWN_FEATURES,    /* incompatible feature we do not know */
    YUN_IMGFMT_REJECT_BACKING_FILE,        /* backing file or parent image */
    YUN_IMGFMT_REJECT_DATA_FILE,           /* qcow2 external data file */
    YUN_IMGFMT_REJECT_VMDK_SUBFORMAT,      /* not monolithicSparse/streamOptimized */
    YUN_IMGFMT_REJECT_VMDK_EXTENT,         /* VMDK descriptor names other extents */
    YUN_IMGFMT_REJECT_TOO_LARGE,           /* virtual size above the policy's limit */
    YUN_IMGFMT_REJECT_UNSUPPORTED_FORMAT,  /* a format we know but never accept (QED, LUKS) */
    _YUN_IMGFMT_REJECT_MAX,
    _YUN_IMGFMT_REJECT_INVALID = -EINVAL,
};

/* What the caller accepts. A NULL policy means: detect only, no size
 * limit, hybrid ISOs refused. */
struct yun_imgfmt_policy {
    const char *claimed_format; /* a yun_imgfmt name; NULL or "auto": detect only */
    uint64_t max_virtual_size;  /* bytes; 0 = no limit */
    bool allow_hybrid_iso;      /* accept an ISO that also carries an MBR/GPT */
};

struct yun_imgfmt_result {
    enum yun_imgfmt format;         /* detected; RAW when nothing else matched, also
                                     * for an unsupported format (then 'reject' says
                                     * unsupported-format and 'message' names it) */
    uint64_t virtual_size;          /* bytes; 0 when rejected before it was known */
    uint64_t actual_size;           /* bytes fed */
    enum yun_imgfmt_reject reject;  /* YUN_IMGFMT_REJECT_NONE when accepted */
    char message[256];              /* a sentence for the user; "" when accepted */
};

const char *yun_imgfmt_to_string(enum yun_imgfmt f);
enum yun_imgfmt yun_imgfmt_from_string(const char *s);
const char *yun_imgfmt_reject_to_string(enum yun_imgfmt_reject r);
enum yun_imgfmt_reject yun_imgfmt_reject_from_string(const char *s);

/* Lifecycle: new, feed every chunk in order, finish; free when done. */
int yun_imgfmt_inspector_new(struct yun_imgfmt_inspector **ret);
struct yun_imgfmt_inspector *yun_imgfmt_inspector_free(struct yun_imgfmt_inspector *insp);
static inline void
yun_imgfmt_inspector_freep(struct yun_imgfmt_inspector **p)
{
    if (*p)
        *p = yun_imgfmt_inspector_free(*p);
}

/* Chunks of any size; errors (-ENOMEM) are sticky. */
int yun_imgfmt_feed(struct yun_imgfmt_inspector *insp, const void *data, size_t size);
/* Judges the bytes fed so far as the whole image. Returns 0 both for an
 * accepted and a rejected image: look at 'ret->reject'. Read-only on
 * 'insp', so it may be called again with another policy. -EINVAL for an
 * unknown claimed format. */
int yun_imgfmt_finish(const struct yun_imgfmt_inspector *insp,
                      const struct yun_imgfmt_policy *policy,
                      struct yun_imgfmt_result *ret);

/* Convenience: read a file (or fd, from its current offset) in 1 MiB
 * chunks and finish. The fd is not closed. */
int yun_imgfmt_inspect_fd(int fd, const struct yun_imgfmt_policy *policy,
                          struct yun_imgfmt_result *ret);
int yun_imgfmt_inspect_file(const char *path, const struct yun_imgfmt_policy *policy,
                            struct yun_imgfmt_result *ret);
