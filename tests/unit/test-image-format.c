/* SPDX-License-Identifier: Apache-2.0
 * test-image-format.c: tests for common/image-format.c, the disk image
 * format inspector. Valid images are made with qemu-img (and an ISO by
 * hand); hostile ones are made with qemu-img or by patching bytes. Every
 * image is also fed one byte at a time and in random chunks, and must get
 * the same verdict as when fed whole; every prefix of every header must be
 * handled without crashing (run under ASan/UBSan or valgrind).
 *
 * Needs qemu-img (qemu-utils) for most cases; without it those cases are
 * skipped. Files go to a fresh directory under $YUN_TEST_DIR, or /tmp. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "image-format.h"

#define KIB 1024u
#define MIB (1024u * 1024u)
#define ONE_BYTE_MAX (1 * MIB)   /* feed files up to this size byte by byte */

static char tmpdir[1024];   /* short enough that tpath() never truncates */
static bool have_qemu_img;

/* ---- helpers ----------------------------------------------------------- */

/* Returns "<tmpdir>/<name>" in one of a few rotating static buffers. */
static const char *
tpath(const char *name)
{
    static char bufs[8][PATH_MAX];
    static unsigned next;
    char *b = bufs[next++ % 8];

    snprintf(b, PATH_MAX, "%s/%s", tmpdir, name);
    return b;
}

static int __attribute__((format(printf, 1, 2)))
run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    st = system(cmd);
    return st == 0 ? 0 : -1;
}

static uint8_t *
load(const char *path, size_t *ret_size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long size;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    assert_true(size >= 0);
    rewind(f);
    buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *ret_size = (size_t)size;
    return buf;
}

static void
save(const char *path, const void *buf, size_t size)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, size, f), size);
    assert_int_equal(fclose(f), 0);
}

static void
copy_file(const char *from, const char *to)
{
    size_t size;
    uint8_t *buf = load(from, &size);

    save(to, buf, size);
    free(buf);
}

static void
put_le16(uint8_t *p, uint16_t v)
{
    p[0] = v & 0xff;
    p[1] = v >> 8;
}

static void
put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (v >> (8 * i)) & 0xff;
}

static void
put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (v >> (8 * i)) & 0xff;
}

static void
put_be16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v & 0xff;
}

static void
put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (v >> (24 - 8 * i)) & 0xff;
}

static void
put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, v >> 32);
    put_be32(p + 4, v & 0xffffffff);
}

static uint32_t
get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
get_le64(const uint8_t *p)
{
    return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static uint64_t
rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A chunk size: mostly small and odd, sometimes uploader-sized. */
static size_t
rng_chunk(uint64_t *s)
{
    uint64_t r = rng_next(s);

    switch (r % 4) {
    case 0:
        return 1 + (r >> 8) % 17;
    case 1:
        return 1 + (r >> 8) % 4099;
    case 2:
        return 1 + (r >> 8) % (70 * KIB);
    default:
        return 1 + (r >> 8) % (4 * MIB);
    }
}

enum chunking { WHOLE, ONE_BYTE, RANDOM };

static void
inspect_buf(const uint8_t *buf, size_t size, enum chunking how, uint64_t seed,
            const struct yun_imgfmt_policy *pol, struct yun_imgfmt_result *res)
{
    struct yun_imgfmt_inspector *insp = NULL;
    uint64_t s = seed | 1;
    size_t off = 0;

    assert_int_equal(yun_imgfmt_inspector_new(&insp), 0);
    while (off < size) {
        size_t n = size - off;

        if (how == ONE_BYTE)
            n = 1;
        else if (how == RANDOM) {
            size_t c = rng_chunk(&s);
            if (c < n)
                n = c;
            /* Empty chunks are legal and change nothing. */
            assert_int_equal(yun_imgfmt_feed(insp, buf + off, 0), 0);
        }
        assert_int_equal(yun_imgfmt_feed(insp, buf + off, n), 0);
        off += n;
    }
    assert_int_equal(yun_imgfmt_finish(insp, pol, res), 0);
    yun_imgfmt_inspector_free(insp);
}

static void
assert_same(const struct yun_imgfmt_result *a, const struct yun_imgfmt_result *b)
{
    assert_int_equal(a->format, b->format);
    assert_int_equal(a->reject, b->reject);
    assert_int_equal(a->virtual_size, b->virtual_size);
    assert_int_equal(a->actual_size, b->actual_size);
    assert_string_equal(a->message, b->message);
}

/* Inspects 'buf' whole, in random chunks and (if not too big) byte by byte,
 * and asserts all verdicts are the same. */
static void
inspect_all_ways(const uint8_t *buf, size_t size, const struct yun_imgfmt_policy *pol,
                 bool one_byte, struct yun_imgfmt_result *res)
{
    struct yun_imgfmt_result other;

    inspect_buf(buf, size, WHOLE, 0, pol, res);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        inspect_buf(buf, size, RANDOM, seed * 0x9e3779b97f4a7c15u, pol, &other);
        assert_same(res, &other);
    }
    if (one_byte) {
        inspect_buf(buf, size, ONE_BYTE, 0, pol, &other);
        assert_same(res, &other);
    }
}

static void
check_result(const char *what, const struct yun_imgfmt_result *res, enum yun_imgfmt format,
             enum yun_imgfmt_reject reject)
{
    if (res->format != format || res->reject != reject)
        print_message("%s: got format %s, reject %s (%s); wanted %s, %s\n", what,
                      yun_imgfmt_to_string(res->format),
                      yun_imgfmt_reject_to_string(res->reject), res->message,
                      yun_imgfmt_to_string(format), yun_imgfmt_reject_to_string(reject));
    assert_int_equal(res->format, format);
    assert_int_equal(res->reject, reject);
    /* A rejection always explains itself in a sentence; an accept does not. */
    if (reject == YUN_IMGFMT_REJECT_NONE)
        assert_string_equal(res->message, "");
    else
        assert_true(strlen(res->message) > 10 && res->message[strlen(res->message) - 1] == '.');
}

/* Inspects the file every way (byte by byte only if small, or if
 * 'one_byte'), plus through yun_imgfmt_inspect_file, and checks the
 * verdict. Returns the result for further checks. */
static struct yun_imgfmt_result
expect_file_ex(const char *name, const struct yun_imgfmt_policy *pol, enum yun_imgfmt format,
               enum yun_imgfmt_reject reject, bool one_byte)
{
    struct yun_imgfmt_result res, via_file;
    size_t size;
    uint8_t *buf = load(tpath(name), &size);

    inspect_all_ways(buf, size, pol, one_byte || size <= ONE_BYTE_MAX, &res);
    free(buf);
    assert_int_equal(yun_imgfmt_inspect_file(tpath(name), pol, &via_file), 0);
    assert_same(&res, &via_file);
    check_result(name, &res, format, reject);
    return res;
}

static struct yun_imgfmt_result
expect_file(const char *name, const struct yun_imgfmt_policy *pol, enum yun_imgfmt format,
            enum yun_imgfmt_reject reject)
{
    return expect_file_ex(name, pol, format, reject, false);
}

static struct yun_imgfmt_result
expect_claim(const char *name, const char *claim, enum yun_imgfmt format,
             enum yun_imgfmt_reject reject)
{
    struct yun_imgfmt_policy pol = { .claimed_format = claim };

    return expect_file(name, &pol, format, reject);
}

/* The virtual size qemu-img itself reports, the oracle for our parsing. */
static uint64_t
qemu_virtual_size(const char *path, const char *fmt)
{
    char cmd[PATH_MAX + 128], line[512];
    uint64_t size = UINT64_MAX;
    FILE *p;

    snprintf(cmd, sizeof cmd, "qemu-img info -f %s --output=json '%s'", fmt, path);
    p = popen(cmd, "r");
    assert_non_null(p);
    while (fgets(line, sizeof line, p)) {
        const char *k = strstr(line, "\"virtual-size\":");
        if (k && size == UINT64_MAX)
            size = strtoull(k + strlen("\"virtual-size\":"), NULL, 10);
    }
    assert_int_equal(pclose(p), 0);
    assert_true(size != UINT64_MAX);
    return size;
}

#define SKIP_WITHOUT_QEMU_IMG()                                                \
    do {                                                                       \
        if (!have_qemu_img)                                                    \
            skip();                                                            \
    } while (0)

/* ---- hand-made images ---------------------------------------------------- */

/* An ISO 9660 primary volume descriptor for 'blocks' 2 KiB blocks at
 * 32 KiB, and the set terminator after it. 'buf' holds at least 36 KiB. */
static void
plant_iso_descriptors(uint8_t *buf, uint32_t blocks)
{
    uint8_t *pvd = buf + 32768, *term = buf + 34816;

    memset(pvd, 0, 2048);
    pvd[0] = 1;
    memcpy(pvd + 1, "CD001", 5);
    pvd[6] = 1;
    memcpy(pvd + 40, "YUN_TEST", 8);
    put_le32(pvd + 80, blocks);
    put_be32(pvd + 84, blocks);
    put_le16(pvd + 120, 1);
    put_be16(pvd + 122, 1);
    put_le16(pvd + 124, 1);
    put_be16(pvd + 126, 1);
    put_le16(pvd + 128, 2048);
    put_be16(pvd + 130, 2048);
    memset(term, 0, 2048);
    term[0] = 255;
    memcpy(term + 1, "CD001", 5);
    term[6] = 1;
}

static void
build_iso(const char *name, size_t size, bool mbr, bool gpt)
{
    uint8_t *buf = calloc(1, size);

    assert_non_null(buf);
    plant_iso_descriptors(buf, (uint32_t)(size / 2048));
    if (mbr || gpt) {
        /* What isohybrid writes: an MBR with one partition over the ISO. */
        buf[446] = 0x80;
        buf[450] = gpt ? 0xee : 0x17;
        put_le32(buf + 454, gpt ? 1 : 0);
        put_le32(buf + 458, (uint32_t)(size / 512));
        buf[510] = 0x55;
        buf[511] = 0xaa;
    }
    if (gpt)
        memcpy(buf + 512, "EFI PART", 8);
    save(tpath(name), buf, size);
    free(buf);
}

/* Patches 'size' bytes at 'off' of the named file. */
static void
patch(const char *name, size_t off, const void *bytes, size_t size)
{
    size_t fsize;
    uint8_t *buf = load(tpath(name), &fsize);

    assert_true(off + size <= fsize);
    memcpy(buf + off, bytes, size);
    save(tpath(name), buf, fsize);
    free(buf);
}

static void
truncate_to(const char *from, const char *to, size_t size)
{
    size_t fsize;
    uint8_t *buf = load(tpath(from), &fsize);

    assert_true(size <= fsize);
    save(tpath(to), buf, size);
    free(buf);
}

/* A VMDK descriptor like qemu writes, with our createType and extent
 * lines. */
static void
vmdk_descriptor(char *out, size_t out_size, const char *create_type, const char *extents,
                const char *extra)
{
    int n = snprintf(out, out_size,
                     "# Disk DescriptorFile\nversion=1\nCID=6f1c2a3b\nparentCID=ffffffff\n"
                     "createType=\"%s\"\n%s\n# Extent description\n%s\n"
                     "# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n"
                     "ddb.geometry.cylinders = \"130\"\nddb.geometry.heads = \"16\"\n"
                     "ddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n",
                     create_type, extra, extents);
    assert_true(n > 0 && (size_t)n < out_size);
}

/* Copies sparse.vmdk to 'name' with 'text' as its embedded descriptor
 * (NUL-padded to the 20 sectors qemu reserves). */
static void
vmdk_with_descriptor(const char *name, const char *text)
{
    uint8_t area[20 * 512] = { 0 };

    assert_true(strlen(text) < sizeof area);
    memcpy(area, text, strlen(text));
    copy_file(tpath("sparse.vmdk"), tpath(name));
    patch(name, 512, area, sizeof area);
}

static void
vhd_fix_checksum(uint8_t *f)
{
    uint32_t sum = 0;

    put_be32(f + 64, 0);
    for (int i = 0; i < 512; i++)
        sum += f[i];
    put_be32(f + 64, ~sum);
}

static uint32_t
crc32c(const uint8_t *p, size_t n)
{
    uint32_t crc = UINT32_MAX;

    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
    }
    return ~crc;
}

static const uint8_t guid_metadata[16] = { 0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
                                           0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e };
static const uint8_t guid_file_params[16] = { 0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
                                              0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b };

/* Finds the metadata region entry of a VHDX region table at 192 KiB. */
static uint8_t *
vhdx_meta_entry(uint8_t *buf)
{
    uint8_t *rt = buf + 192 * KIB;

    for (uint32_t i = 0; i < get_le32(rt + 8); i++)
        if (memcmp(rt + 16 + 32 * i, guid_metadata, 16) == 0)
            return rt + 16 + 32 * i;
    fail_msg("no metadata region in the VHDX");
    return NULL;
}

static void
vhdx_fix_region_crc(uint8_t *buf)
{
    uint8_t *rt = buf + 192 * KIB;

    put_le32(rt + 4, 0);
    put_le32(rt + 4, crc32c(rt, 64 * KIB));
}

/* ---- fixture: valid images ----------------------------------------------- */

struct valid_image {
    const char *name;
    const char *create;          /* qemu-img create arguments; NULL: hand-made */
    const char *qemu_fmt;        /* for the qemu-img info oracle; NULL: none */
    enum yun_imgfmt format;
    uint64_t virtual_size;       /* what was asked */
    uint64_t accept_from;        /* shorter prefixes must not pass as 'format'; 0: file size */
};

static const struct valid_image valid_images[] = {
    { "raw.img", "-f raw '%s' 1M", "raw", YUN_IMGFMT_RAW, 1 * MIB, 0 },
    { "v2.qcow2", "-f qcow2 -o compat=0.10 '%s' 64M", "qcow2", YUN_IMGFMT_QCOW2, 64 * MIB, 0 },
    { "v3.qcow2", "-f qcow2 '%s' 64M", "qcow2", YUN_IMGFMT_QCOW2, 64 * MIB, 0 },
    /* Its refcount blocks follow the L1 table, which is as far as the
     * inspector checks a qcow2's length. */
    { "small-cluster.qcow2", "-f qcow2 -o cluster_size=512 '%s' 3G", "qcow2", YUN_IMGFMT_QCOW2,
      3ull * 1024 * MIB, 768 * KIB },
    { "extl2.qcow2", "-f qcow2 -o extended_l2=on,cluster_size=16384 '%s' 70M", "qcow2",
      YUN_IMGFMT_QCOW2, 70 * MIB, 0 },
    { "sparse.vmdk", "-f vmdk -o subformat=monolithicSparse '%s' 64M", "vmdk", YUN_IMGFMT_VMDK,
      64 * MIB, 0 },
    { "stream.vmdk", "-f vmdk -o subformat=streamOptimized '%s' 64M", "vmdk", YUN_IMGFMT_VMDK,
      64 * MIB, 0 },
    { "footer.vmdk", NULL, "vmdk", YUN_IMGFMT_VMDK, 64 * MIB, 0 },
    { "dynamic.vhd", "-f vpc -o force_size=on '%s' 64M", "vpc", YUN_IMGFMT_VHD, 64 * MIB, 0 },
    { "chs.vhd", "-f vpc '%s' 64M", "vpc", YUN_IMGFMT_VHD, 0, 0 },
    { "fixed.vhd", "-f vpc -o subformat=fixed,force_size=on '%s' 4M", "vpc", YUN_IMGFMT_VHD,
      4 * MIB, 0 },
    { "disk.vhdx", "-f vhdx '%s' 64M", "vhdx", YUN_IMGFMT_VHDX, 64 * MIB, 4 * MIB },
    { "disk.vdi", "-f vdi '%s' 64M", "vdi", YUN_IMGFMT_VDI, 64 * MIB, 0 },
    { "disk.iso", NULL, NULL, YUN_IMGFMT_ISO, 1 * MIB, 0 },
};

/* A streamOptimized VMDK as VMware streams it: the header says "grain
 * directory at the end", and a footer (marker, header copy, end-of-stream
 * marker) closes the file. Built from qemu's streamOptimized image. */
static void
build_footer_vmdk(void)
{
    size_t size;
    uint8_t *src = load(tpath("stream.vmdk"), &size);
    uint8_t *buf = calloc(1, size + 1536);

    assert_non_null(buf);
    memcpy(buf, src, size);
    put_le64(buf + 56, UINT64_MAX);
    put_le64(buf + size, 1);                 /* marker: one sector of metadata */
    put_le32(buf + size + 12, 3);            /* MARKER_FOOTER */
    memcpy(buf + size + 512, src, 512);      /* the real header */
    save(tpath("footer.vmdk"), buf, size + 1536);
    free(buf);
    free(src);
}

static int
remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
group_setup(void **state)
{
    const char *base = getenv("YUN_TEST_DIR");

    (void)state;
    if (!base || !*base)
        base = "/tmp";
    (void)run("mkdir -p '%s'", base);
    snprintf(tmpdir, sizeof tmpdir, "%s/test-image-format.XXXXXX", base);
    if (!mkdtemp(tmpdir))
        return -1;
    have_qemu_img = run("qemu-img --version >/dev/null 2>&1") == 0;
    if (!have_qemu_img)
        fprintf(stderr, "qemu-img not found: qemu-img cases are skipped\n");

    build_iso("disk.iso", 1 * MIB, false, false);
    if (!have_qemu_img)
        return 0;
    for (size_t i = 0; i < sizeof valid_images / sizeof valid_images[0]; i++) {
        char args[PATH_MAX + 128];

        if (!valid_images[i].create)
            continue;
        /* The table's create strings are format strings with one %s. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(args, sizeof args, valid_images[i].create, tpath(valid_images[i].name));
#pragma GCC diagnostic pop
        if (run("qemu-img create -q %s", args) < 0)
            return -1;
    }
    build_footer_vmdk();
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    if (tmpdir[0])
        nftw(tmpdir, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- tests ------------------------------------------------------------- */

static void
test_names(void **state)
{
    (void)state;
    for (int i = 0; i < _YUN_IMGFMT_MAX; i++)
        assert_int_equal(yun_imgfmt_from_string(yun_imgfmt_to_string(i)), i);
    for (int i = 0; i < _YUN_IMGFMT_REJECT_MAX; i++)
        assert_int_equal(yun_imgfmt_reject_from_string(yun_imgfmt_reject_to_string(i)), i);
    assert_string_equal(yun_imgfmt_to_string(YUN_IMGFMT_VHD), "vhd");
    assert_string_equal(yun_imgfmt_reject_to_string(YUN_IMGFMT_REJECT_BACKING_FILE),
                        "backing-file");
    assert_int_equal(yun_imgfmt_from_string("vpc"), -EINVAL);
    assert_int_equal(yun_imgfmt_from_string("QCOW2"), -EINVAL);
    assert_int_equal(yun_imgfmt_from_string(NULL), -EINVAL);
    assert_null(yun_imgfmt_to_string(_YUN_IMGFMT_MAX));
    assert_null(yun_imgfmt_to_string(-1));
    assert_int_equal(yun_imgfmt_reject_from_string("nope"), -EINVAL);
    assert_null(yun_imgfmt_reject_to_string(_YUN_IMGFMT_REJECT_MAX));
}

static void
test_api(void **state)
{
    struct yun_imgfmt_inspector *insp = NULL;
    struct yun_imgfmt_result res, again;
    struct yun_imgfmt_policy bad = { .claimed_format = "floppy" };
    struct yun_imgfmt_policy aki = { .claimed_format = "aki" };
    struct yun_imgfmt_policy qcow2 = { .claimed_format = "qcow2" };
    static const uint8_t text[] = "just some bytes";

    (void)state;
    assert_int_equal(yun_imgfmt_inspector_new(NULL), -EINVAL);
    assert_int_equal(yun_imgfmt_inspector_new(&insp), 0);
    assert_int_equal(yun_imgfmt_feed(NULL, text, 1), -EINVAL);
    assert_int_equal(yun_imgfmt_feed(insp, NULL, 1), -EINVAL);
    assert_int_equal(yun_imgfmt_feed(insp, NULL, 0), 0);

    /* Nothing fed: an empty raw image. */
    assert_int_equal(yun_imgfmt_finish(insp, NULL, &res), 0);
    check_result("empty", &res, YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_NONE);
    assert_int_equal(res.virtual_size, 0);

    assert_int_equal(yun_imgfmt_feed(insp, text, sizeof text), 0);
    assert_int_equal(yun_imgfmt_finish(insp, &bad, &res), -EINVAL);
    assert_int_equal(yun_imgfmt_finish(NULL, NULL, &res), -EINVAL);
    assert_int_equal(yun_imgfmt_finish(insp, NULL, NULL), -EINVAL);

    /* finish does not consume: judge the same bytes under two policies. */
    assert_int_equal(yun_imgfmt_finish(insp, &aki, &res), 0);
    check_result("aki", &res, YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_NONE);
    assert_int_equal(res.virtual_size, sizeof text);
    assert_int_equal(res.actual_size, sizeof text);
    assert_int_equal(yun_imgfmt_finish(insp, &qcow2, &again), 0);
    check_result("qcow2 claim", &again, YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
    assert_string_equal(again.message,
                        "The image was declared as 'qcow2' but its content is 'raw'.");
    insp = yun_imgfmt_inspector_free(insp);
    assert_null(insp);
    assert_null(yun_imgfmt_inspector_free(NULL));

    assert_int_equal(yun_imgfmt_inspect_file(tpath("does-not-exist"), NULL, &res), -ENOENT);
    assert_int_equal(yun_imgfmt_inspect_file(NULL, NULL, &res), -EINVAL);
    assert_int_equal(yun_imgfmt_inspect_fd(-1, NULL, &res), -EINVAL);
}

/* Every valid image is detected, with the size asked for (and the size
 * qemu-img reports), under "auto", its own name, and aki/ari for raw; a
 * claim of any other format is a mismatch. */
static void
test_valid_images(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof valid_images / sizeof valid_images[0]; i++) {
        const struct valid_image *v = &valid_images[i];
        struct yun_imgfmt_result res;
        uint64_t want = v->virtual_size;

        if (!have_qemu_img && (v->create || v->qemu_fmt))
            continue;
        if (v->qemu_fmt) {
            uint64_t q = qemu_virtual_size(tpath(v->name), v->qemu_fmt);
            if (want == 0)
                want = q;   /* CHS-sized VHD: qemu rounds the size to a geometry */
            assert_int_equal(q, want);
        }
        /* Byte by byte whatever the size, once per format. */
        res = expect_file_ex(v->name, NULL, v->format, YUN_IMGFMT_REJECT_NONE, true);
        assert_int_equal(res.virtual_size, want);
        res = expect_claim(v->name, "auto", v->format, YUN_IMGFMT_REJECT_NONE);
        assert_int_equal(res.virtual_size, want);
        res = expect_claim(v->name, yun_imgfmt_to_string(v->format), v->format,
                           YUN_IMGFMT_REJECT_NONE);
        assert_int_equal(res.virtual_size, want);
        for (int f = 0; f < _YUN_IMGFMT_MAX; f++) {
            bool same = f == (int)v->format ||
                        (v->format == YUN_IMGFMT_RAW &&
                         (f == YUN_IMGFMT_AKI || f == YUN_IMGFMT_ARI));

            if (same)
                continue;
            expect_claim(v->name, yun_imgfmt_to_string(f), v->format,
                         YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
        }
    }
    if (have_qemu_img) {
        expect_claim("raw.img", "aki", YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_NONE);
        expect_claim("raw.img", "ari", YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_NONE);
    }
}

static void
test_size_limit(void **state)
{
    struct yun_imgfmt_policy pol = { .claimed_format = "qcow2" };
    struct yun_imgfmt_result res;

    (void)state;
    SKIP_WITHOUT_QEMU_IMG();
    pol.max_virtual_size = 64 * MIB;
    expect_file("v3.qcow2", &pol, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_NONE);
    pol.max_virtual_size = 64 * MIB - 1;
    res = expect_file("v3.qcow2", &pol, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_TOO_LARGE);
    assert_int_equal(res.virtual_size, 64 * MIB);
    pol.claimed_format = "vmdk";
    pol.max_virtual_size = 32 * MIB;
    expect_file("sparse.vmdk", &pol, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_TOO_LARGE);
    pol.claimed_format = NULL;
    pol.max_virtual_size = 512 * KIB;
    expect_file("raw.img", &pol, YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_TOO_LARGE);
    expect_file("disk.vhdx", &pol, YUN_IMGFMT_VHDX, YUN_IMGFMT_REJECT_TOO_LARGE);
    expect_file("disk.vdi", &pol, YUN_IMGFMT_VDI, YUN_IMGFMT_REJECT_TOO_LARGE);
    expect_file("dynamic.vhd", &pol, YUN_IMGFMT_VHD, YUN_IMGFMT_REJECT_TOO_LARGE);
    expect_file("disk.iso", &pol, YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_TOO_LARGE);
    pol.max_virtual_size = UINT64_MAX;
    expect_file("small-cluster.qcow2", &pol, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_NONE);
}

static void
test_qcow2_hostile(void **state)
{
    uint8_t be[8];

    (void)state;
    SKIP_WITHOUT_QEMU_IMG();
    assert_int_equal(run("qemu-img create -q -f raw '%s' 1M", tpath("base.raw")), 0);
    assert_int_equal(run("qemu-img create -q -f qcow2 -b '%s' -F raw '%s'", tpath("base.raw"),
                         tpath("backing.qcow2")), 0);
    expect_claim("backing.qcow2", "qcow2", YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_BACKING_FILE);
    assert_int_equal(run("qemu-img create -q -f qcow2 -o compat=0.10 -b '%s' -F raw '%s'",
                         tpath("base.raw"), tpath("backing-v2.qcow2")), 0);
    expect_claim("backing-v2.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_BACKING_FILE);

    /* CVE-2024-32498: the guest's reads go to a file of the uploader's
     * choosing. */
    assert_int_equal(run("qemu-img create -q -f qcow2 -o data_file='%s' '%s' 64M",
                         tpath("data.raw"), tpath("datafile.qcow2")), 0);
    expect_claim("datafile.qcow2", "qcow2", YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_DATA_FILE);
    assert_int_equal(run("qemu-img create -q -f qcow2 -o data_file='%s',data_file_raw=on '%s' 64M",
                         tpath("data2.raw"), tpath("datafile-raw.qcow2")), 0);
    expect_claim("datafile-raw.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_DATA_FILE);

    copy_file(tpath("v3.qcow2"), tpath("v4.qcow2"));
    put_be32(be, 4);
    patch("v4.qcow2", 4, be, 4);
    expect_claim("v4.qcow2", "qcow2", YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION);
    copy_file(tpath("v3.qcow2"), tpath("v1.qcow2"));
    put_be32(be, 1);
    patch("v1.qcow2", 4, be, 4);
    expect_claim("v1.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION);

    copy_file(tpath("v3.qcow2"), tpath("bit5.qcow2"));
    put_be64(be, UINT64_C(1) << 5);
    patch("bit5.qcow2", 72, be, 8);
    expect_claim("bit5.qcow2", "qcow2", YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_UNKNOWN_FEATURES);
    copy_file(tpath("v3.qcow2"), tpath("bit63.qcow2"));
    put_be64(be, UINT64_C(1) << 63);
    patch("bit63.qcow2", 72, be, 8);
    expect_claim("bit63.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_UNKNOWN_FEATURES);
    /* The data-file bit alone, without the file name extension. */
    copy_file(tpath("v3.qcow2"), tpath("bit2.qcow2"));
    put_be64(be, UINT64_C(1) << 2);
    patch("bit2.qcow2", 72, be, 8);
    expect_claim("bit2.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_DATA_FILE);
    copy_file(tpath("v3.qcow2"), tpath("corrupt-bit.qcow2"));
    put_be64(be, UINT64_C(1) << 1);
    patch("corrupt-bit.qcow2", 72, be, 8);
    expect_claim("corrupt-bit.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_CORRUPT);
    /* Dirty (lazy refcounts) is a known, harmless bit. */
    copy_file(tpath("v3.qcow2"), tpath("dirty.qcow2"));
    put_be64(be, UINT64_C(1) << 0);
    patch("dirty.qcow2", 72, be, 8);
    expect_claim("dirty.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_NONE);

    copy_file(tpath("v3.qcow2"), tpath("cluster30.qcow2"));
    put_be32(be, 30);
    patch("cluster30.qcow2", 20, be, 4);
    expect_claim("cluster30.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_CORRUPT);
    copy_file(tpath("v3.qcow2"), tpath("l1-small.qcow2"));
    put_be64(be, UINT64_C(1) << 50);
    patch("l1-small.qcow2", 24, be, 8);
    expect_claim("l1-small.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_CORRUPT);
    copy_file(tpath("v3.qcow2"), tpath("hdrlen.qcow2"));
    put_be32(be, 40);
    patch("hdrlen.qcow2", 100, be, 4);
    expect_claim("hdrlen.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_CORRUPT);

    truncate_to("v3.qcow2", "cut50.qcow2", 50);
    expect_claim("cut50.qcow2", "qcow2", YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("v3.qcow2", "cut100.qcow2", 100);
    expect_claim("cut100.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("v3.qcow2", "cut64k.qcow2", 64 * KIB);
    expect_claim("cut64k.qcow2", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_TRUNCATED);
}

/* The claim must be the content: a "raw" upload that qemu would probe as
 * qcow2, a "qcow2" that is really a VMDK, and so on. */
static void
test_claim_mismatch(void **state)
{
    struct yun_imgfmt_result res;

    (void)state;
    SKIP_WITHOUT_QEMU_IMG();
    res = expect_claim("v3.qcow2", "raw", YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
    assert_string_equal(res.message,
                        "The image was declared as 'raw' but its content is 'qcow2'.");
    expect_claim("sparse.vmdk", "qcow2", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
    expect_claim("v3.qcow2", "aki", YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
    expect_claim("disk.vdi", "ari", YUN_IMGFMT_VDI, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
    expect_claim("v2.qcow2", "raw", YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
    expect_claim("raw.img", "vhd", YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
    expect_claim("disk.iso", "raw", YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
}

static void
test_vmdk_hostile(void **state)
{
    char text[8192], lines[512];
    uint8_t le[8];

    (void)state;
    SKIP_WITHOUT_QEMU_IMG();
    /* Descriptor-only VMDKs whose data is in other files (CVE-2022-47951). */
    assert_int_equal(run("qemu-img create -q -f vmdk -o subformat=monolithicFlat '%s' 64M",
                         tpath("flat.vmdk")), 0);
    expect_claim("flat.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);
    expect_claim("flat.vmdk", "raw", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_FORMAT_MISMATCH);
    assert_int_equal(run("qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse '%s' 64M",
                         tpath("split.vmdk")), 0);
    expect_claim("split.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);
    /* One extent of the split image alone has no descriptor of its own. */
    expect_claim("split-s001.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_SUBFORMAT);
    assert_int_equal(run("qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentFlat '%s' 64M",
                         tpath("splitflat.vmdk")), 0);
    expect_claim("splitflat.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);

    /* Our own descriptor, as qemu writes it, is accepted: the edits below
     * are the only difference. */
    vmdk_descriptor(text, sizeof text, "monolithicSparse", "RW 131072 SPARSE \"x.vmdk\"", "");
    vmdk_with_descriptor("desc-ok.vmdk", text);
    expect_claim("desc-ok.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_NONE);
    assert_int_equal(qemu_virtual_size(tpath("desc-ok.vmdk"), "vmdk"), 64 * MIB);

    snprintf(lines, sizeof lines, "RW 131072 SPARSE \"x.vmdk\"\nRW 131072 FLAT \"%s\" 0",
             tpath("data.raw"));
    vmdk_descriptor(text, sizeof text, "monolithicSparse", lines, "");
    vmdk_with_descriptor("two-extents.vmdk", text);
    expect_claim("two-extents.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);

    vmdk_descriptor(text, sizeof text, "monolithicSparse", "RW 131072 SPARSE \"/etc/passwd\"", "");
    vmdk_with_descriptor("path-extent.vmdk", text);
    expect_claim("path-extent.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);

    vmdk_descriptor(text, sizeof text, "monolithicSparse", "RW 131072 FLAT \"x-flat.vmdk\" 0", "");
    vmdk_with_descriptor("flat-extent.vmdk", text);
    expect_claim("flat-extent.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);

    vmdk_descriptor(text, sizeof text, "monolithicSparse", "", "");
    vmdk_with_descriptor("no-extent.vmdk", text);
    expect_claim("no-extent.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);

    vmdk_descriptor(text, sizeof text, "monolithicFlat", "RW 131072 SPARSE \"x.vmdk\"", "");
    vmdk_with_descriptor("type-flat.vmdk", text);
    expect_claim("type-flat.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_SUBFORMAT);

    vmdk_descriptor(text, sizeof text, "monolithicSparse", "RW 131072 SPARSE \"x.vmdk\"",
                    "parentFileNameHint=\"/var/lib/yun/images/other.vmdk\"");
    vmdk_with_descriptor("parent.vmdk", text);
    expect_claim("parent.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_BACKING_FILE);

    vmdk_descriptor(text, sizeof text, "monolithicSparse", "RW 131072 SPARSE \"x.vmdk\"",
                    "some garbage line");
    vmdk_with_descriptor("garbage.vmdk", text);
    expect_claim("garbage.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_CORRUPT);

    vmdk_descriptor(text, sizeof text, "monolithicSparse", "RW 131072 SPARSE \"x\xc3\xa9.vmdk\"",
                    "");
    vmdk_with_descriptor("nonascii.vmdk", text);
    expect_claim("nonascii.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_CORRUPT);

    vmdk_descriptor(text, sizeof text, "monolithicSparse", "RW 2048 SPARSE \"x.vmdk\"", "");
    vmdk_with_descriptor("size-mismatch.vmdk", text);
    expect_claim("size-mismatch.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_CORRUPT);

    /* qemu reads the descriptor up to its first NUL, not up to the header's
     * size: text running past the 20 declared sectors must be checked. */
    {
        uint8_t area[21 * 512 + 64];
        size_t len;

        vmdk_descriptor(text, sizeof text, "monolithicSparse", "RW 131072 SPARSE \"x.vmdk\"", "");
        len = strlen(text);
        memcpy(area, text, len);
        memset(area + len, '#', 20 * 512 - len);  /* comment to the declared end */
        memcpy(area + 20 * 512, "\nRW 10 FLAT \"/etc/shadow\" 0\n", 28);
        memset(area + 20 * 512 + 28, 0, sizeof area - 20 * 512 - 28);
        copy_file(tpath("sparse.vmdk"), tpath("overlong.vmdk"));
        patch("overlong.vmdk", 512, area, sizeof area);
        expect_claim("overlong.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);
    }

    /* Zero capacity turns the embedded descriptor into the disk's
     * descriptor file for qemu. */
    copy_file(tpath("sparse.vmdk"), tpath("cap0.vmdk"));
    put_le64(le, 0);
    patch("cap0.vmdk", 12, le, 8);
    expect_claim("cap0.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_EXTENT);

    copy_file(tpath("sparse.vmdk"), tpath("descoff.vmdk"));
    put_le64(le, 2);
    patch("descoff.vmdk", 28, le, 8);
    expect_claim("descoff.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_CORRUPT);

    copy_file(tpath("sparse.vmdk"), tpath("v4.vmdk"));
    put_le32(le, 4);
    patch("v4.vmdk", 4, le, 4);
    expect_claim("v4.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION);

    copy_file(tpath("sparse.vmdk"), tpath("crlf.vmdk"));
    patch("crlf.vmdk", 73, "\n \n\n", 4);
    expect_claim("crlf.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_CORRUPT);

    copy_file(tpath("sparse.vmdk"), tpath("gtes.vmdk"));
    put_le32(le, 1024);
    patch("gtes.vmdk", 44, le, 4);
    expect_claim("gtes.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_CORRUPT);

    memcpy(text, "COWD", 4);
    memset(text + 4, 0, 2048 - 4);
    save(tpath("cowd.vmdk"), text, 2048);
    expect_claim("cowd.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_VMDK_SUBFORMAT);

    /* A footer that does not close the stream, or disagrees. */
    truncate_to("footer.vmdk", "footer-cut.vmdk", 64 * KIB + 1024);
    expect_claim("footer-cut.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_TRUNCATED);
    copy_file(tpath("footer.vmdk"), tpath("footer-bad.vmdk"));
    put_le64(le, 7);
    patch("footer-bad.vmdk", 64 * KIB + 512 + 28, le, 8);
    expect_claim("footer-bad.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_CORRUPT);

    truncate_to("sparse.vmdk", "cut300.vmdk", 300);
    expect_claim("cut300.vmdk", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("sparse.vmdk", "cut512.vmdk", 512);
    expect_claim("cut512.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("sparse.vmdk", "cut20k.vmdk", 20 * KIB);
    expect_claim("cut20k.vmdk", NULL, YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_TRUNCATED);
}

/* One header hidden behind another, and hybrid ISOs. */
static void
test_multiple_formats(void **state)
{
    struct yun_imgfmt_policy hybrid = { .allow_hybrid_iso = true };
    struct yun_imgfmt_policy hybrid_iso = { .claimed_format = "iso", .allow_hybrid_iso = true };
    struct yun_imgfmt_result res;
    uint8_t pvd[36 * KIB] = { 0 };
    uint8_t *buf;
    size_t size;

    (void)state;
    build_iso("hybrid-mbr.iso", 1 * MIB, true, false);
    expect_file("hybrid-mbr.iso", &hybrid, YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_NONE);
    expect_file("hybrid-mbr.iso", &hybrid_iso, YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_NONE);
    expect_file("hybrid-mbr.iso", NULL, YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_MULTIPLE_FORMATS);
    build_iso("hybrid-gpt.iso", 1 * MIB, true, true);
    expect_file("hybrid-gpt.iso", &hybrid, YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_NONE);
    expect_file("hybrid-gpt.iso", NULL, YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_MULTIPLE_FORMATS);
    truncate_to("disk.iso", "cut.iso", 33000);
    expect_claim("cut.iso", "iso", YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("disk.iso", "cut-volume.iso", 512 * KIB);
    expect_claim("cut-volume.iso", "iso", YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_TRUNCATED);

    SKIP_WITHOUT_QEMU_IMG();
    plant_iso_descriptors(pvd, 96);
    copy_file(tpath("v3.qcow2"), tpath("qcow2-iso.img"));
    patch("qcow2-iso.img", 32 * KIB, pvd + 32 * KIB, 4 * KIB);
    res = expect_claim("qcow2-iso.img", "qcow2", YUN_IMGFMT_QCOW2,
                       YUN_IMGFMT_REJECT_MULTIPLE_FORMATS);
    assert_string_equal(res.message, "The image matches more than one format ('qcow2' and "
                                     "'iso'); such images are refused.");
    expect_file("qcow2-iso.img", &hybrid_iso, YUN_IMGFMT_QCOW2,
                YUN_IMGFMT_REJECT_MULTIPLE_FORMATS);
    copy_file(tpath("sparse.vmdk"), tpath("vmdk-iso.img"));
    patch("vmdk-iso.img", 32 * KIB, pvd + 32 * KIB, 4 * KIB);
    expect_claim("vmdk-iso.img", "vmdk", YUN_IMGFMT_VMDK, YUN_IMGFMT_REJECT_MULTIPLE_FORMATS);

    /* A qcow2 image that ends in a VHD footer. */
    buf = load(tpath("v3.qcow2"), &size);
    {
        size_t vsize;
        uint8_t *vhd = load(tpath("fixed.vhd"), &vsize);

        buf = realloc(buf, size + 512);
        assert_non_null(buf);
        memcpy(buf + size, vhd + vsize - 512, 512);
        save(tpath("qcow2-vhd.img"), buf, size + 512);
        free(vhd);
    }
    free(buf);
    expect_claim("qcow2-vhd.img", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_MULTIPLE_FORMATS);

    /* A boot signature where a qcow2 header is: refused. On a fixed VHD
     * it is the disk's own MBR: fine. */
    copy_file(tpath("v3.qcow2"), tpath("qcow2-mbr.img"));
    patch("qcow2-mbr.img", 510, "\x55\xaa", 2);
    expect_claim("qcow2-mbr.img", NULL, YUN_IMGFMT_QCOW2, YUN_IMGFMT_REJECT_MULTIPLE_FORMATS);
    copy_file(tpath("fixed.vhd"), tpath("fixed-mbr.vhd"));
    patch("fixed-mbr.vhd", 510, "\x55\xaa", 2);
    expect_claim("fixed-mbr.vhd", "vhd", YUN_IMGFMT_VHD, YUN_IMGFMT_REJECT_NONE);
    /* A raw disk with a partition table is just raw. */
    copy_file(tpath("raw.img"), tpath("raw-mbr.img"));
    patch("raw-mbr.img", 510, "\x55\xaa", 2);
    expect_claim("raw-mbr.img", "raw", YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_NONE);
}

static void
test_vhd_vdi_vhdx_hostile(void **state)
{
    uint8_t *buf, le[8];
    size_t size;

    (void)state;
    SKIP_WITHOUT_QEMU_IMG();
    /* VHD: differencing disk (both footer copies), bad checksum, cuts. */
    buf = load(tpath("dynamic.vhd"), &size);
    put_be32(buf + 60, 4);
    vhd_fix_checksum(buf);
    memcpy(buf + size - 512, buf, 512);
    save(tpath("diff.vhd"), buf, size);
    free(buf);
    expect_claim("diff.vhd", "vhd", YUN_IMGFMT_VHD, YUN_IMGFMT_REJECT_BACKING_FILE);
    copy_file(tpath("dynamic.vhd"), tpath("badsum.vhd"));
    patch("badsum.vhd", 40, "\x01", 1);
    expect_claim("badsum.vhd", NULL, YUN_IMGFMT_VHD, YUN_IMGFMT_REJECT_CORRUPT);
    truncate_to("dynamic.vhd", "cut600.vhd", 600);
    expect_claim("cut600.vhd", "vhd", YUN_IMGFMT_VHD, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("dynamic.vhd", "cut2048.vhd", 2048);
    expect_claim("cut2048.vhd", NULL, YUN_IMGFMT_VHD, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("dynamic.vhd", "cut100.vhd", 100);
    expect_claim("cut100.vhd", NULL, YUN_IMGFMT_VHD, YUN_IMGFMT_REJECT_TRUNCATED);

    /* VDI: a parent, a differencing type, an unknown version, a cut. */
    copy_file(tpath("disk.vdi"), tpath("parent.vdi"));
    patch("parent.vdi", 440, "\x01", 1);
    expect_claim("parent.vdi", "vdi", YUN_IMGFMT_VDI, YUN_IMGFMT_REJECT_BACKING_FILE);
    copy_file(tpath("disk.vdi"), tpath("diff.vdi"));
    put_le32(le, 4);
    patch("diff.vdi", 76, le, 4);
    expect_claim("diff.vdi", NULL, YUN_IMGFMT_VDI, YUN_IMGFMT_REJECT_BACKING_FILE);
    copy_file(tpath("disk.vdi"), tpath("v10.vdi"));
    put_le32(le, 0x00010000);
    patch("v10.vdi", 68, le, 4);
    expect_claim("v10.vdi", NULL, YUN_IMGFMT_VDI, YUN_IMGFMT_REJECT_UNSUPPORTED_VERSION);
    copy_file(tpath("disk.vdi"), tpath("blocks.vdi"));
    put_le32(le, 2);
    patch("blocks.vdi", 384, le, 4);
    expect_claim("blocks.vdi", NULL, YUN_IMGFMT_VDI, YUN_IMGFMT_REJECT_CORRUPT);
    truncate_to("disk.vdi", "cut.vdi", 300);
    expect_claim("cut.vdi", "vdi", YUN_IMGFMT_VDI, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("disk.vdi", "cut600.vdi", 600);
    expect_claim("cut600.vdi", NULL, YUN_IMGFMT_VDI, YUN_IMGFMT_REJECT_TRUNCATED);

    /* VHDX: a parent, a bad region table checksum, a metadata region that
     * points back into the headers, a cut. */
    buf = load(tpath("disk.vhdx"), &size);
    {
        uint8_t *meta = vhdx_meta_entry(buf);
        uint64_t meta_off = get_le64(meta + 16);
        uint8_t *mt = buf + meta_off;
        bool patched = false;

        for (unsigned i = 0; i < (unsigned)(mt[10] | mt[11] << 8); i++) {
            uint8_t *e = mt + 32 + 32 * i;
            if (memcmp(e, guid_file_params, 16) == 0) {
                buf[meta_off + get_le32(e + 16) + 4] |= 2;   /* HasParent */
                patched = true;
            }
        }
        assert_true(patched);
        save(tpath("parent.vhdx"), buf, size);
    }
    free(buf);
    expect_claim("parent.vhdx", "vhdx", YUN_IMGFMT_VHDX, YUN_IMGFMT_REJECT_BACKING_FILE);

    copy_file(tpath("disk.vhdx"), tpath("badcrc.vhdx"));
    patch("badcrc.vhdx", 192 * KIB + 4000, "\x01", 1);
    expect_claim("badcrc.vhdx", NULL, YUN_IMGFMT_VHDX, YUN_IMGFMT_REJECT_CORRUPT);

    buf = load(tpath("disk.vhdx"), &size);
    put_le64(vhdx_meta_entry(buf) + 16, 128 * KIB);
    vhdx_fix_region_crc(buf);
    save(tpath("backwards.vhdx"), buf, size);
    free(buf);
    expect_claim("backwards.vhdx", NULL, YUN_IMGFMT_VHDX, YUN_IMGFMT_REJECT_CORRUPT);

    buf = load(tpath("disk.vhdx"), &size);
    put_le64(vhdx_meta_entry(buf) + 16, UINT64_MAX - 4095);
    vhdx_fix_region_crc(buf);
    save(tpath("huge-offset.vhdx"), buf, size);
    free(buf);
    expect_claim("huge-offset.vhdx", NULL, YUN_IMGFMT_VHDX, YUN_IMGFMT_REJECT_CORRUPT);

    truncate_to("disk.vhdx", "cut.vhdx", 300 * KIB);
    expect_claim("cut.vhdx", "vhdx", YUN_IMGFMT_VHDX, YUN_IMGFMT_REJECT_TRUNCATED);
    truncate_to("disk.vhdx", "cut100k.vhdx", 100 * KIB);
    expect_claim("cut100k.vhdx", NULL, YUN_IMGFMT_VHDX, YUN_IMGFMT_REJECT_TRUNCATED);
}

/* Every prefix of every valid image: no crash, and never accepted as the
 * original format while its metadata is incomplete (a prefix whose magic
 * is cut may pass as raw: it is raw). Short prefixes are tried one by one,
 * longer ones at and around every power of two and the end. */
static void
test_prefixes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof valid_images / sizeof valid_images[0]; i++) {
        const struct valid_image *v = &valid_images[i];
        size_t size, accept_from, lens[128], n_lens = 0;
        uint8_t *buf;

        if (!have_qemu_img && (v->create || v->qemu_fmt))
            continue;
        buf = load(tpath(v->name), &size);
        accept_from = v->accept_from ? v->accept_from : size;
        for (size_t k = 12; k < 40 && ((size_t)1 << k) < size; k++)
            for (int d = -1; d <= 1; d++)
                lens[n_lens++] = ((size_t)1 << k) + (size_t)d;
        lens[n_lens++] = size - 1;
        if (size > 1537) {
            lens[n_lens++] = size - 511;
            lens[n_lens++] = size - 512;
            lens[n_lens++] = size - 1536;
        }

        for (size_t len = 0; len <= size && len <= 4096 + 34 * KIB; len++) {
            struct yun_imgfmt_result res;

            /* Every byte through the first headers and ISO descriptors. */
            if (len > 4096 && len < 32 * KIB)
                len = 32 * KIB;
            inspect_buf(buf, len, WHOLE, 0, NULL, &res);
            if (len < accept_from && v->format != YUN_IMGFMT_RAW && res.format == v->format)
                assert_int_not_equal(res.reject, YUN_IMGFMT_REJECT_NONE);
        }
        for (size_t k = 0; k < n_lens; k++) {
            struct yun_imgfmt_result res, other;

            if (lens[k] > size)
                continue;
            inspect_buf(buf, lens[k], WHOLE, 0, NULL, &res);
            inspect_buf(buf, lens[k], RANDOM, lens[k], NULL, &other);
            assert_same(&res, &other);
            if (lens[k] < accept_from && v->format != YUN_IMGFMT_RAW && res.format == v->format)
                assert_int_not_equal(res.reject, YUN_IMGFMT_REJECT_NONE);
        }
        free(buf);
    }
}

/* Random bytes, alone and behind each format's magic, and random byte
 * flips in valid headers: no crash, and the chunking never matters. */
static void
test_random_input(void **state)
{
    static const size_t sizes[] = { 0, 1, 3, 4, 8, 67, 68, 100, 511, 512, 513, 1024,
                                    1535, 1536, 1537, 4096, 33 * KIB, 40 * KIB, 70 * KIB };
    static const struct {
        size_t off;
        const char *bytes;
        size_t len;
    } magics[] = {
#define MAGIC(off, bytes) { off, bytes, sizeof(bytes) - 1 }
        MAGIC(0, ""),
        MAGIC(0, "QFI\xfb\0\0\0\3"),
        MAGIC(0, "QFI\xfb\0\0\0\2"),
        MAGIC(0, "KDMV\1\0\0\0"),
        MAGIC(0, "COWD"),
        MAGIC(0, "conectix"),
        MAGIC(0, "vhdxfile"),
        MAGIC(64, "\x7f\x10\xda\xbe\x01\x00\x01\x00"),
        MAGIC(32768, "\1CD001\1"),
        MAGIC(0, "# Disk DescriptorFile\nversion=1\nRW 1 FLAT \"a\" 0\ncreateType=\"x\"\n"),
        MAGIC(510, "\x55\xaa"),
        MAGIC(0, "QED\0"),
        MAGIC(0, "LUKS\xba\xbe\0\1"),
        MAGIC(0, "LUKS\xba\xbe\0\2"),
#undef MAGIC
    };
    uint64_t s = 0x1234567;
    uint8_t *buf = malloc(70 * KIB);

    (void)state;
    assert_non_null(buf);
    for (size_t m = 0; m < sizeof magics / sizeof magics[0]; m++) {
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            for (int rep = 0; rep < 3; rep++) {
                struct yun_imgfmt_result res;
                struct yun_imgfmt_policy pol = { .claimed_format = rep == 1 ? "vmdk" : NULL,
                                                 .max_virtual_size = rep == 2 ? 4096 : 0 };
                size_t size = sizes[z];

                for (size_t i = 0; i < size; i++)
                    buf[i] = (uint8_t)rng_next(&s);
                if (magics[m].off + magics[m].len <= size)
                    memcpy(buf + magics[m].off, magics[m].bytes, magics[m].len);
                inspect_all_ways(buf, size, &pol, size <= 4096, &res);
                assert_true(res.format >= 0 && res.format < _YUN_IMGFMT_MAX);
                assert_true(res.reject >= 0 && res.reject < _YUN_IMGFMT_REJECT_MAX);
            }
        }
    }
    free(buf);

    if (!have_qemu_img)
        return;
    for (size_t i = 0; i < sizeof valid_images / sizeof valid_images[0]; i++) {
        const struct valid_image *v = &valid_images[i];
        size_t size;
        uint8_t *img, *copy;
        int rounds = 60;

        img = load(tpath(v->name), &size);
        copy = malloc(size);
        assert_non_null(copy);
        if (size > 1 * MIB)
            rounds = 12;
        for (int r = 0; r < rounds; r++) {
            struct yun_imgfmt_result res, other;
            int flips = 1 + (int)(rng_next(&s) % 8);

            memcpy(copy, img, size);
            for (int f = 0; f < flips; f++) {
                /* Mostly the first sectors; for VHDX also its tables. */
                size_t span = size < 4096 ? size : 4096;
                size_t off = (size_t)(rng_next(&s) % span);

                if (v->format == YUN_IMGFMT_VHDX && (r % 2))
                    off = 192 * KIB + (size_t)(rng_next(&s) % (64 * KIB));
                if (v->format == YUN_IMGFMT_VHDX && (r % 3) == 0)
                    off = 3 * MIB + (size_t)(rng_next(&s) % 256);
                if (v->format == YUN_IMGFMT_ISO && (r % 2))
                    off = 32 * KIB + (size_t)(rng_next(&s) % 4096);
                if (off < size)
                    copy[off] ^= (uint8_t)(1u << (rng_next(&s) % 8));
            }
            inspect_buf(copy, size, WHOLE, 0, NULL, &res);
            inspect_buf(copy, size, RANDOM, (uint64_t)r + 1, NULL, &other);
            assert_same(&res, &other);
        }
        free(copy);
        free(img);
    }
}

/* Expects 'name' refused as an unsupported format under no claim and under
 * every format's claim, detected as nothing we accept (raw). */
static void
expect_unsupported_every_claim(const char *name, const char *what)
{
    struct yun_imgfmt_result res;
    char want[256];

    res = expect_claim(name, NULL, YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_UNSUPPORTED_FORMAT);
    snprintf(want, sizeof want, "The image's content is %s, a format that is not accepted.",
             what);
    assert_string_equal(res.message, want);
    assert_int_equal(res.virtual_size, 0);
    expect_claim(name, "auto", YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_UNSUPPORTED_FORMAT);
    for (int f = 0; f < _YUN_IMGFMT_MAX; f++) {
        res = expect_claim(name, yun_imgfmt_to_string(f), YUN_IMGFMT_RAW,
                           YUN_IMGFMT_REJECT_UNSUPPORTED_FORMAT);
        snprintf(want, sizeof want, "The image was declared as '%s' but its content is %s, a "
                 "format that is not accepted.", yun_imgfmt_to_string(f), what);
        assert_string_equal(res.message, want);
    }
}

/* QED and LUKS are not disk formats we take, but qemu opens them: a file
 * that starts with their header is refused whatever was claimed, even
 * when it also looks like a format we take. */
static void
test_unsupported_formats(void **state)
{
    uint8_t buf[40 * KIB] = { 0 };
    uint8_t pvd[36 * KIB] = { 0 };
    static const char luks_v1[] = "'luks' (a LUKS version 1 encrypted volume)";
    static const char luks_v2[] = "'luks' (a LUKS version 2 encrypted volume)";
    static const char qed[] = "'qed' (QEMU enhanced disk)";

    (void)state;
    /* Hand-made headers: a QED header as qemu writes it (64 KiB
     * clusters, 1 MiB disk), a LUKS2 binary header (4 KiB, the JSON area
     * after it left empty) and a LUKS1 header. */
    memcpy(buf, "QED\0", 4);
    put_le32(buf + 4, 64 * KIB);
    put_le32(buf + 8, 4);
    put_le32(buf + 12, 1);
    put_le64(buf + 40, 64 * KIB);
    put_le64(buf + 48, 1 * MIB);
    save(tpath("hand.qed"), buf, sizeof buf);
    expect_unsupported_every_claim("hand.qed", qed);
    save(tpath("header-only.qed"), buf, 64);
    expect_unsupported_every_claim("header-only.qed", qed);

    memset(buf, 0, sizeof buf);
    memcpy(buf, "LUKS\xba\xbe", 6);
    put_be16(buf + 6, 2);
    put_be64(buf + 8, 16 * KIB);                    /* hdr_size */
    memcpy(buf + 24, "yun-test", 8);               /* label */
    memcpy(buf + 72, "sha256", 6);                 /* checksum_alg */
    save(tpath("hand-v2.luks"), buf, 16 * KIB);
    expect_unsupported_every_claim("hand-v2.luks", luks_v2);
    put_be16(buf + 6, 1);
    memcpy(buf + 8, "aes\0\0\0\0\0", 8);
    save(tpath("hand-v1.luks"), buf, 4 * KIB);
    expect_unsupported_every_claim("hand-v1.luks", luks_v1);
    /* A version no LUKS has: still a LUKS header, still refused. */
    put_be16(buf + 6, 7);
    save(tpath("v7.luks"), buf, 4 * KIB);
    expect_unsupported_every_claim("v7.luks", "'luks' (a LUKS header of unknown version)");
    save(tpath("magic-only.luks"), buf, 6);
    expect_unsupported_every_claim("magic-only.luks",
                                   "'luks' (a LUKS header of unknown version)");

    /* Hidden behind another format's marks: the QED or LUKS header is
     * what a probe sees first, so that is the verdict, not
     * multiple-formats and not the other format. */
    memset(buf, 0, sizeof buf);
    memcpy(buf, "LUKS\xba\xbe\0\1", 8);
    put_le32(buf + 64, 0xbeda107f);                /* VDI signature */
    plant_iso_descriptors(pvd, 20);
    memcpy(buf + 32 * KIB, pvd + 32 * KIB, 4 * KIB);
    save(tpath("luks-vdi-iso.img"), buf, sizeof buf);
    expect_unsupported_every_claim("luks-vdi-iso.img", luks_v1);
    memcpy(buf, "QED\0\0\0\1\0", 8);
    buf[510] = 0x55;
    buf[511] = 0xaa;
    save(tpath("qed-mbr-iso.img"), buf, sizeof buf);
    expect_unsupported_every_claim("qed-mbr-iso.img", qed);

    /* Only a whole magic at the start counts: these are raw. */
    memset(buf, 0, sizeof buf);
    memcpy(buf, "QED", 3);
    save(tpath("qed-cut.img"), buf, 3);
    expect_claim("qed-cut.img", "raw", YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_NONE);
    memcpy(buf, "LUKS\xba", 5);
    save(tpath("luks-cut.img"), buf, 5);
    expect_claim("luks-cut.img", "raw", YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_NONE);
    memset(buf, 0, sizeof buf);
    memcpy(buf + 512, "QED\0", 4);
    memcpy(buf + 1024, "LUKS\xba\xbe\0\1", 8);
    save(tpath("magic-inside.img"), buf, 4 * KIB);
    expect_claim("magic-inside.img", "raw", YUN_IMGFMT_RAW, YUN_IMGFMT_REJECT_NONE);

    /* What qemu-img itself writes. */
    SKIP_WITHOUT_QEMU_IMG();
    assert_int_equal(run("qemu-img create -q -f qed '%s' 64M", tpath("disk.qed")), 0);
    expect_unsupported_every_claim("disk.qed", qed);
    assert_int_equal(run("qemu-img create -q -f raw '%s' 1M", tpath("qed-base.raw")), 0);
    assert_int_equal(run("qemu-img create -q -f qed -b '%s' -F raw '%s'", tpath("qed-base.raw"),
                         tpath("backing.qed")), 0);
    expect_unsupported_every_claim("backing.qed", qed);
    assert_int_equal(run("qemu-img create -q -f luks --object secret,id=s0,data=yun "
                         "-o key-secret=s0,iter-time=10 '%s' 1M", tpath("disk.luks")), 0);
    expect_unsupported_every_claim("disk.luks", luks_v1);
}

/* A real ISO from genisoimage or xorriso, when one is installed. */
static void
test_real_iso(void **state)
{
    struct yun_imgfmt_result res;

    (void)state;
    if (run("command -v genisoimage >/dev/null 2>&1") == 0) {
        assert_int_equal(run("mkdir -p '%s' && echo hello > '%s/hello.txt'", tpath("isodir"),
                             tpath("isodir")), 0);
        assert_int_equal(run("genisoimage -quiet -o '%s' '%s' 2>/dev/null", tpath("real.iso"),
                             tpath("isodir")), 0);
    } else if (run("command -v xorriso >/dev/null 2>&1") == 0) {
        assert_int_equal(run("mkdir -p '%s' && echo hello > '%s/hello.txt'", tpath("isodir"),
                             tpath("isodir")), 0);
        assert_int_equal(run("xorriso -as mkisofs -quiet -o '%s' '%s' 2>/dev/null",
                             tpath("real.iso"), tpath("isodir")), 0);
    } else {
        skip();
    }
    res = expect_claim("real.iso", "iso", YUN_IMGFMT_ISO, YUN_IMGFMT_REJECT_NONE);
    assert_true(res.virtual_size > 0 && res.virtual_size <= res.actual_size);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_api),
        cmocka_unit_test(test_valid_images),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_qcow2_hostile),
        cmocka_unit_test(test_claim_mismatch),
        cmocka_unit_test(test_vmdk_hostile),
        cmocka_unit_test(test_multiple_formats),
        cmocka_unit_test(test_vhd_vdi_vhdx_hostile),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_random_input),
        cmocka_unit_test(test_real_iso),
        cmocka_unit_test(test_unsupported_formats),
    };

    /* YUN_TEST_FILTER=test_prefixes runs one test (cmocka's glob). */
    if (getenv("YUN_TEST_FILTER"))
        cmocka_set_test_filter(getenv("YUN_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
