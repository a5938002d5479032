/* SPDX-License-Identifier: Apache-2.0
 * test-keypair.c: unit tests of common/keypair.c. Created Ed25519, RSA and
 * ECDSA keys are checked by OpenSSH itself: 'ssh-keygen -l' on the public
 * and the private key file gives our fingerprints (SHA256 and MD5),
 * 'ssh-keygen -y' derives our public key from our private key, and a
 * signature made with our private key by 'ssh-keygen -Y sign' verifies
 * against our public key. Keys made by 'ssh-keygen' import with the
 * fingerprints it prints; junk is refused with a message. A fixed test
 * vector checks fingerprints without ssh-keygen.
 *
 * ssh-keygen comes with Debian's openssh-client (contrib/deps.sh); the
 * tests that need it are skipped, saying so, when it is missing. Each test
 * gets a fresh directory under $YUN_TEST_DIR (else /tmp). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base64.h"
#include "cleanup.h"
#include "keypair.h"
#include "util.h"

struct fixture {
    char dir[2048];
};

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

/* ctest names $YUN_TEST_DIR but does not create it. */
static void
make_base(const char *base)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", base);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            (void)mkdir(p, 0755);
            *s = '/';
        }
    (void)mkdir(p, 0755);
}

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *base = getenv("YUN_TEST_DIR");
    if (!base || !*base)
        base = "/tmp";
    make_base(base);
    int n = snprintf(fx->dir, sizeof fx->dir, "%s/test-keypair.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof fx->dir || !mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

static bool
have_ssh_keygen(void)
{
    static int have = -1;
    if (have < 0) {
        have = system("command -v ssh-keygen >/dev/null 2>&1") == 0;
        if (!have)
            fprintf(stderr, "ssh-keygen not found (Debian package openssh-client, see "
                            "contrib/deps.sh): skipping the checks against OpenSSH\n");
    }
    return have;
}

/* Runs a shell command; returns its stdout (malloc'ed, trailing newline
 * removed) and stores its exit status in '*ret_status'. */
static char *run(int *ret_status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *
run(int *ret_status, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t cap = 65536, size = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t got;
    while ((got = fread(out + size, 1, cap - 1 - size, f)) > 0)
        size += got;
    out[size] = '\0';
    while (size > 0 && out[size - 1] == '\n')
        out[--size] = '\0';
    int status = pclose(f);
    *ret_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
    assert_int_equal(yun_write_file_atomic(path, text, strlen(text), mode), 0);
}

/* "BITS FINGERPRINT COMMENT (TYPE)" from 'ssh-keygen -l [-E md5] -f path'. */
static void
assert_keygen_fingerprint(const char *path, const char *hash, unsigned bits,
                          const char *fingerprint, const char *comment, const char *type)
{
    int status;
    _cleanup_free_ char *out = run(&status, "ssh-keygen -l -E %s -f '%s' 2>&1", hash, path);
    assert_int_equal(status, 0);
    char want[4096];
    if (*comment) {
        snprintf(want, sizeof want, "%u %s %s (%s)", bits, fingerprint, comment, type);
        assert_string_equal(out, want);
        return;
    }
    /* Without a comment ssh-keygen prints "no comment" or a file name in
     * its place, depending on the file and the version. */
    snprintf(want, sizeof want, "%u %s ", bits, fingerprint);
    assert_int_equal(strncmp(out, want, strlen(want)), 0);
    snprintf(want, sizeof want, " (%s)", type);
    assert_true(strlen(out) > strlen(want));
    assert_string_equal(out + strlen(out) - strlen(want), want);
}

/* Every check OpenSSH can make of a key we created. */
static void
check_with_openssh(const struct fixture *fx, const struct yun_keypair *kp, const char *type)
{
    if (!have_ssh_keygen())
        return;
    char priv[2200], pub[2200], derived[2200], data[2200], signers[2200];
    /* Not "id": given "id", ssh-keygen -l would read "id.pub" instead. */
    snprintf(priv, sizeof priv, "%s/private", fx->dir);
    snprintf(pub, sizeof pub, "%s/id.pub", fx->dir);
    snprintf(derived, sizeof derived, "%s/derived.pub", fx->dir);
    snprintf(data, sizeof data, "%s/data", fx->dir);
    snprintf(signers, sizeof signers, "%s/allowed_signers", fx->dir);
    char line[8192];
    snprintf(line, sizeof line, "%s\n", kp->public_key);
    write_file(pub, line, 0644);
    write_file(priv, kp->private_key, 0600);

    assert_keygen_fingerprint(pub, "sha256", kp->bits, kp->fingerprint, kp->comment, type);
    assert_keygen_fingerprint(priv, "sha256", kp->bits, kp->fingerprint, kp->comment, type);
    assert_keygen_fingerprint(pub, "md5", kp->bits, kp->fingerprint_md5, kp->comment, type);

    /* ssh-keygen -y -f private > derived.pub: our public key, comment
     * included (it reads the comment from the private key container). */
    int status;
    _cleanup_free_ char *out = run(&status, "ssh-keygen -y -f '%s' > '%s' && cat '%s'", priv,
                                   derived, derived);
    assert_int_equal(status, 0);
    assert_string_equal(out, kp->public_key);

    /* The private numbers are right, not just well-formed: sign with the
     * private key, verify against the public key. */
    write_file(data, "some data to sign\n", 0600);
    char sig[2300];
    snprintf(sig, sizeof sig, "%s.sig", data);
    (void)unlink(sig); /* from an earlier key in this test */
    snprintf(line, sizeof line, "tester %s\n", kp->public_key);
    write_file(signers, line, 0644);
    _cleanup_free_ char *sign = run(&status, "ssh-keygen -q -Y sign -f '%s' -n file '%s' 2>&1",
                                    priv, data);
    if (status != 0)
        fail_msg("ssh-keygen -Y sign: %s", sign);
    _cleanup_free_ char *verify = run(&status, "ssh-keygen -Y verify -f '%s' -I tester -n file "
                                               "-s '%s' < '%s' 2>&1",
                                      signers, sig, data);
    if (status != 0)
        fail_msg("ssh-keygen -Y verify: %s", verify);
}

static void
check_shape(const struct yun_keypair *kp, const char *comment)
{
    const char *type = yun_keypair_type_to_string(kp->type);
    assert_int_equal(strncmp(kp->public_key, type, strlen(type)), 0);
    assert_int_equal(kp->public_key[strlen(type)], ' ');
    assert_string_equal(kp->comment, comment);
    if (*comment) {
        const char *tail = kp->public_key + strlen(kp->public_key) - strlen(comment) - 1;
        assert_int_equal(tail[0], ' ');
        assert_string_equal(tail + 1, comment);
    }
    assert_null(strchr(kp->public_key, '\n'));
    assert_int_equal(strlen(kp->fingerprint), YUN_KEYPAIR_FINGERPRINT_SIZE - 1);
    assert_int_equal(strncmp(kp->fingerprint, "SHA256:", 7), 0);
    assert_int_equal(strlen(kp->fingerprint_md5), YUN_KEYPAIR_FINGERPRINT_MD5_SIZE - 1);
    assert_int_equal(strncmp(kp->fingerprint_md5, "MD5:", 4), 0);

    /* PEM with OpenSSH's label and 70-column lines. */
    const char *p = kp->private_key;
    static const char begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
    static const char end[] = "-----END OPENSSH PRIVATE KEY-----\n";
    assert_int_equal(strncmp(p, begin, strlen(begin)), 0);
    size_t len = strlen(p);
    assert_true(len > strlen(end));
    assert_string_equal(p + len - strlen(end), end);
    for (const char *l = p + strlen(begin); l < p + len - strlen(end);) {
        const char *nl = strchr(l, '\n');
        assert_non_null(nl);
        assert_true(nl - l <= 70);
        l = nl + 1;
    }

    /* Our own public key imports back to the same key. */
    struct yun_keypair back = { 0 };
    char *msg = NULL;
    assert_int_equal(yun_keypair_import(kp->public_key, &back, &msg), 0);
    assert_null(msg);
    assert_int_equal(back.type, kp->type);
    assert_int_equal(back.bits, kp->bits);
    assert_string_equal(back.public_key, kp->public_key);
    assert_string_equal(back.comment, kp->comment);
    assert_string_equal(back.fingerprint, kp->fingerprint);
    assert_string_equal(back.fingerprint_md5, kp->fingerprint_md5);
    assert_null(back.private_key);
    yun_keypair_done(&back);
}

static void
test_create_ed25519(void **state)
{
    struct fixture *fx = *state;
    struct yun_keypair kp = { 0 };
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 0, "alice@yun", &kp), 0);
    assert_int_equal(kp.type, YUN_KEYPAIR_ED25519);
    assert_int_equal(kp.bits, 256);
    /* The blob starts with string "ssh-ed25519" and string length 32. */
    assert_int_equal(strncmp(kp.public_key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", 37), 0);
    check_shape(&kp, "alice@yun");
    check_with_openssh(fx, &kp, "ED25519");
    printf("%s\n%s\n", kp.public_key, kp.fingerprint);

    /* Two keys differ. */
    struct yun_keypair other = { 0 };
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 256, NULL, &other), 0);
    assert_string_not_equal(other.fingerprint, kp.fingerprint);
    check_shape(&other, "");
    check_with_openssh(fx, &other, "ED25519");
    yun_keypair_done(&other);
    yun_keypair_done(&kp);
    yun_keypair_done(&kp); /* released twice: harmless */
}

static void
test_create_rsa(void **state)
{
    struct fixture *fx = *state;
    struct yun_keypair kp = { 0 };
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_RSA, 0, "rsa key: 3072 bits", &kp), 0);
    assert_int_equal(kp.bits, YUN_KEYPAIR_RSA_BITS);
    assert_int_equal(strncmp(kp.public_key, "ssh-rsa AAAAB3NzaC1yc2EAAAA", 27), 0);
    check_shape(&kp, "rsa key: 3072 bits");
    check_with_openssh(fx, &kp, "RSA");
    yun_keypair_done(&kp);

    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_RSA, 2048, "small", &kp), 0);
    assert_int_equal(kp.bits, 2048);
    check_shape(&kp, "small");
    check_with_openssh(fx, &kp, "RSA");
    yun_keypair_done(&kp);
}

static void
test_create_ecdsa(void **state)
{
    struct fixture *fx = *state;
    struct yun_keypair kp = { 0 };
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ECDSA_P256, 0, "José's laptop", &kp), 0);
    assert_int_equal(kp.bits, 256);
    assert_int_equal(strncmp(kp.public_key, "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYA",
                             52), 0);
    check_shape(&kp, "José's laptop");
    check_with_openssh(fx, &kp, "ECDSA");
    yun_keypair_done(&kp);
}

static void
test_create_bad_args(void **state)
{
    struct yun_keypair kp = { 0 };
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 255, NULL, &kp), -EINVAL);
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ECDSA_P256, 384, NULL, &kp), -EINVAL);
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_RSA, 1024, NULL, &kp), -EINVAL);
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_RSA, 8192, NULL, &kp), -EINVAL);
    assert_int_equal(yun_keypair_create(_YUN_KEYPAIR_TYPE_MAX, 0, NULL, &kp), -EINVAL);
    assert_int_equal(yun_keypair_create(_YUN_KEYPAIR_TYPE_INVALID, 0, NULL, &kp), -EINVAL);
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 0, "two\nlines", &kp), -EINVAL);
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 0, "bad \xff utf-8", &kp),
                     -EINVAL);
    char long_comment[YUN_KEYPAIR_COMMENT_MAX + 2];
    memset(long_comment, 'c', sizeof long_comment - 1);
    long_comment[sizeof long_comment - 1] = '\0';
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 0, long_comment, &kp), -EINVAL);
    long_comment[YUN_KEYPAIR_COMMENT_MAX] = '\0';
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 0, long_comment, &kp), 0);
    yun_keypair_done(&kp);
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 0, NULL, NULL), -EINVAL);
}

static void
test_type_strings(void **state)
{
    for (int t = 0; t < _YUN_KEYPAIR_TYPE_MAX; t++)
        assert_int_equal(yun_keypair_type_from_string(yun_keypair_type_to_string(t)), t);
    assert_string_equal(yun_keypair_type_to_string(YUN_KEYPAIR_RSA), "ssh-rsa");
    assert_null(yun_keypair_type_to_string(_YUN_KEYPAIR_TYPE_MAX));
    assert_null(yun_keypair_type_to_string(_YUN_KEYPAIR_TYPE_INVALID));
    assert_int_equal(yun_keypair_type_from_string("ssh-dss"), _YUN_KEYPAIR_TYPE_INVALID);
    assert_int_equal(yun_keypair_type_from_string("ed25519"), _YUN_KEYPAIR_TYPE_INVALID);
    assert_int_equal(yun_keypair_type_from_string(NULL), _YUN_KEYPAIR_TYPE_INVALID);
}

/* Recorded from 'ssh-keygen -l [-E md5]' (OpenSSH 9.2). */
static void
test_fingerprint_vector(void **state)
{
    static const char line[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOJBINnLdpb9MFYQa006PmsIQcE"
                               "xooQNqu7GOMcOjzt+ test vector";
    struct yun_keypair kp = { 0 };
    assert_int_equal(yun_keypair_import(line, &kp, NULL), 0);
    assert_string_equal(kp.fingerprint, "SHA256:miD9WijCBDzBQMdp8WoOV4hkAmPqxX2EMCrkzBygLqc");
    assert_string_equal(kp.fingerprint_md5, "MD5:64:65:f2:57:41:db:00:15:c3:d4:7b:fc:51:99:a1:91");
    assert_string_equal(kp.comment, "test vector");
    assert_string_equal(kp.public_key, line);
    yun_keypair_done(&kp);

    /* Surrounding whitespace, a tab, CRLF, and no comment. */
    static const char *const spellings[] = {
        "  ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOJBINnLdpb9MFYQa006PmsIQcExooQNqu7GOMcOjzt+\r\n",
        "ssh-ed25519\tAAAAC3NzaC1lZDI1NTE5AAAAIOJBINnLdpb9MFYQa006PmsIQcExooQNqu7GOMcOjzt+\n",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOJBINnLdpb9MFYQa006PmsIQcExooQNqu7GOMcOjzt+",
    };
    for (size_t i = 0; i < sizeof spellings / sizeof spellings[0]; i++) {
        assert_int_equal(yun_keypair_import(spellings[i], &kp, NULL), 0);
        assert_string_equal(kp.public_key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOJBINnLdpb9MFY"
                                           "Qa006PmsIQcExooQNqu7GOMcOjzt+");
        assert_string_equal(kp.comment, "");
        assert_string_equal(kp.fingerprint, "SHA256:miD9WijCBDzBQMdp8WoOV4hkAmPqxX2EMCrkzBygLqc");
        yun_keypair_done(&kp);
    }
}

/* Keys made by ssh-keygen import with the fingerprints it prints. */
static void
test_import_ssh_keygen(void **state)
{
    struct fixture *fx = *state;
    if (!have_ssh_keygen())
        skip();
    static const struct {
        const char *args, *type;
        unsigned bits;
    } kinds[] = {
        { "-t ed25519", "ED25519", 256 },
        { "-t rsa -b 2048", "RSA", 2048 },
        { "-t rsa -b 3072", "RSA", 3072 },
        { "-t ecdsa -b 256", "ECDSA", 256 },
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char path[2200];
        snprintf(path, sizeof path, "%s/x%zu", fx->dir, i);
        int status;
        _cleanup_free_ char *gen = run(&status, "ssh-keygen -q %s -N '' -C 'made by ssh-keygen' "
                                                "-f '%s' 2>&1", kinds[i].args, path);
        if (status != 0)
            fail_msg("ssh-keygen %s: %s", kinds[i].args, gen);
        char pub[2300];
        snprintf(pub, sizeof pub, "%s.pub", path);
        _cleanup_free_ char *line = NULL;
        size_t size;
        assert_int_equal(yun_read_file(pub, 65536, &line, &size), 0);

        struct yun_keypair kp = { 0 };
        char *msg = NULL;
        assert_int_equal(yun_keypair_import(line, &kp, &msg), 0);
        assert_null(msg);
        assert_int_equal(kp.bits, kinds[i].bits);
        assert_string_equal(kp.comment, "made by ssh-keygen");
        line[strcspn(line, "\n")] = '\0';
        assert_string_equal(kp.public_key, line);
        assert_keygen_fingerprint(pub, "sha256", kp.bits, kp.fingerprint, kp.comment,
                                  kinds[i].type);
        assert_keygen_fingerprint(pub, "md5", kp.bits, kp.fingerprint_md5, kp.comment,
                                  kinds[i].type);
        yun_keypair_done(&kp);
    }

    /* Real keys of refused kinds. */
    static const struct {
        const char *args, *msg;
    } refused[] = {
        { "-t rsa -b 1024", "RSA keys need at least 2048 bits; this one has 1024" },
        { "-t ecdsa -b 384", "unsupported key type 'ecdsa-sha2-nistp384'" },
        { "-t ecdsa -b 521", "unsupported key type 'ecdsa-sha2-nistp521'" },
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char path[2200];
        snprintf(path, sizeof path, "%s/r%zu", fx->dir, i);
        int status;
        _cleanup_free_ char *out = run(&status, "ssh-keygen -q %s -N '' -f '%s' 2>&1 && "
                                                "cat '%s.pub'", refused[i].args, path, path);
        assert_int_equal(status, 0);
        struct yun_keypair kp = { 0 };
        char *msg = NULL;
        assert_int_equal(yun_keypair_import(out, &kp, &msg), -EINVAL);
        assert_non_null(msg);
        assert_int_equal(strncmp(msg, refused[i].msg, strlen(refused[i].msg)), 0);
        free(msg);
    }
}

/* RFC 4251 encoding helpers to forge blobs. */
struct blob {
    uint8_t data[4096];
    size_t size;
};

static void
blob_u32(struct blob *b, uint32_t v)
{
    b->data[b->size++] = (uint8_t)(v >> 24);
    b->data[b->size++] = (uint8_t)(v >> 16);
    b->data[b->size++] = (uint8_t)(v >> 8);
    b->data[b->size++] = (uint8_t)v;
}

static void
blob_string(struct blob *b, const void *p, size_t n)
{
    blob_u32(b, (uint32_t)n);
    memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void
blob_cstring(struct blob *b, const char *s)
{
    blob_string(b, s, strlen(s));
}

/* An RSA blob whose modulus is 'mod_size' bytes of 'fill' with its last
 * byte 'last', and exponent bytes 'e'. */
static void
rsa_blob(struct blob *b, const uint8_t *e, size_t e_size, size_t mod_size, uint8_t first,
         uint8_t fill, uint8_t last)
{
    b->size = 0;
    blob_cstring(b, "ssh-rsa");
    blob_string(b, e, e_size);
    uint8_t mod[600];
    memset(mod, fill, mod_size);
    mod[0] = first;
    mod[mod_size - 1] = last;
    blob_string(b, mod, mod_size);
}

static char *
line_of(const char *type, const struct blob *b, const char *comment)
{
    char *b64 = malloc(yun_base64_encoded_len(b->size, 0) + 1);
    assert_non_null(b64);
    yun_base64_encode(b->data, b->size, 0, b64);
    char *line = NULL;
    assert_true(asprintf(&line, "%s %s%s%s", type, b64, comment ? " " : "",
                         comment ? comment : "") > 0);
    free(b64);
    return line;
}

static void
assert_refused(const char *line, const char *want_msg)
{
    struct yun_keypair kp = { 0 };
    char *msg = NULL;
    assert_int_equal(yun_keypair_import(line, &kp, &msg), -EINVAL);
    assert_non_null(msg);
    if (want_msg && strncmp(msg, want_msg, strlen(want_msg)) != 0)
        fail_msg("import of '%.60s': got '%s', want '%s'", line, msg, want_msg);
    assert_null(kp.public_key);
    free(msg);
}

static void
test_import_junk(void **state)
{
    static const char good_b64[] = "AAAAC3NzaC1lZDI1NTE5AAAAIOJBINnLdpb9MFYQa006PmsIQcExo"
                                   "oQNqu7GOMcOjzt+";
    char buf[10000];
    assert_refused("", "the key is empty");
    assert_refused(" \t\r\n", "the key is empty");
    assert_refused(NULL, "the key is empty");
    assert_refused("ssh-ed25519", "the key has no data");
    assert_refused("ssh-ed25519   ", "the key has no data");
    assert_refused("ssh-ed25519 !!!!", "the key data is not valid base64");
    assert_refused("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOJBINnLdpb9MFYQa006PmsIQcExooQNqu7GOM",
                   "the key data is not valid base64");
    assert_refused("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "unsupported key type 'ssh-dss'");
    assert_refused("hello world", "unsupported key type 'hello'");
    assert_refused("command=\"/bin/true\" ssh-ed25519 AAAA", "unsupported key type 'command=");
    assert_refused("-----BEGIN OPENSSH PRIVATE KEY-----\n"
                   "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
                   "-----END OPENSSH PRIVATE KEY-----\n",
                   "this is not a public key line");
    snprintf(buf, sizeof buf, "ssh-ed25519 %s one\nssh-ed25519 %s two", good_b64, good_b64);
    assert_refused(buf, "the key must be a single line");
    snprintf(buf, sizeof buf, "ssh-rsa %s", good_b64);
    assert_refused(buf, "the key data is of type 'ssh-ed25519', not 'ssh-rsa'");
    snprintf(buf, sizeof buf, "ssh-ed25519 %s bell\x07", good_b64);
    assert_refused(buf, "the key comment contains control characters");
    snprintf(buf, sizeof buf, "ssh-ed25519 %s caf\xe9", good_b64);
    assert_refused(buf, "the key comment contains control characters or invalid UTF-8");
    snprintf(buf, sizeof buf, "ssh-ed25519 %s %0300d", good_b64, 7);
    assert_refused(buf, "the key comment is longer than 255 bytes");
    memset(buf, 'A', sizeof buf - 1);
    memcpy(buf, "ssh-rsa ", 8);
    buf[sizeof buf - 1] = '\0';
    assert_refused(buf, "the key is longer than 8192 bytes");

    /* Forged Ed25519 blobs: short, long, trailing bytes. */
    struct blob b = { .size = 0 };
    uint8_t k[33] = { 1 };
    blob_cstring(&b, "ssh-ed25519");
    blob_string(&b, k, 31);
    _cleanup_free_ char *short_key = line_of("ssh-ed25519", &b, NULL);
    assert_refused(short_key, "the key data is truncated or malformed");
    b.size = 0;
    blob_cstring(&b, "ssh-ed25519");
    blob_string(&b, k, 33);
    _cleanup_free_ char *long_key = line_of("ssh-ed25519", &b, NULL);
    assert_refused(long_key, "the key data is truncated or malformed");
    b.size = 0;
    blob_cstring(&b, "ssh-ed25519");
    blob_string(&b, k, 32);
    b.data[b.size++] = 0;
    _cleanup_free_ char *trailing = line_of("ssh-ed25519", &b, NULL);
    assert_refused(trailing, "the key data is truncated or malformed");
    b.size = 0;
    blob_u32(&b, 1000); /* a string length past the end */
    _cleanup_free_ char *overrun = line_of("ssh-ed25519", &b, NULL);
    assert_refused(overrun, "the key data is truncated or malformed");

    /* Forged RSA blobs: a plausible 2048-bit modulus is accepted, then
     * one defect at a time. */
    static const uint8_t e65537[] = { 0x01, 0x00, 0x01 }, e_even[] = { 0x01, 0x00, 0x00 };
    static const uint8_t e_one[] = { 0x01 }, e_padded[] = { 0x00, 0x01, 0x00, 0x01 };
    static const uint8_t e37[] = { 0x25 };
    rsa_blob(&b, e65537, 3, 257, 0x00, 0xa5, 0x01); /* 0x00 then top bit set: minimal */
    _cleanup_free_ char *ok_rsa = line_of("ssh-rsa", &b, "forged");
    struct yun_keypair kp = { 0 };
    assert_int_equal(yun_keypair_import(ok_rsa, &kp, NULL), 0);
    assert_int_equal(kp.bits, 2048);
    yun_keypair_done(&kp);
    rsa_blob(&b, e37, 1, 257, 0x00, 0xa5, 0x01); /* PuTTYgen's exponent */
    _cleanup_free_ char *putty = line_of("ssh-rsa", &b, NULL);
    assert_int_equal(yun_keypair_import(putty, &kp, NULL), 0);
    yun_keypair_done(&kp);

    rsa_blob(&b, e65537, 3, 256, 0xa5, 0xa5, 0x01); /* top bit set, no zero: negative */
    _cleanup_free_ char *negative = line_of("ssh-rsa", &b, NULL);
    assert_refused(negative, "the key data is truncated or malformed");
    rsa_blob(&b, e65537, 3, 257, 0x00, 0x25, 0x01); /* needless leading zero */
    _cleanup_free_ char *padded = line_of("ssh-rsa", &b, NULL);
    assert_refused(padded, "the key data is truncated or malformed");
    rsa_blob(&b, e_padded, 4, 257, 0x00, 0xa5, 0x01);
    _cleanup_free_ char *padded_e = line_of("ssh-rsa", &b, NULL);
    assert_refused(padded_e, "the key data is truncated or malformed");
    rsa_blob(&b, e65537, 3, 257, 0x00, 0xa5, 0x02); /* even modulus */
    _cleanup_free_ char *even = line_of("ssh-rsa", &b, NULL);
    assert_refused(even, "the RSA key is not valid");
    rsa_blob(&b, e_even, 3, 257, 0x00, 0xa5, 0x01);
    _cleanup_free_ char *even_e = line_of("ssh-rsa", &b, NULL);
    assert_refused(even_e, "the RSA key is not valid");
    rsa_blob(&b, e_one, 1, 257, 0x00, 0xa5, 0x01);
    _cleanup_free_ char *one_e = line_of("ssh-rsa", &b, NULL);
    assert_refused(one_e, "the RSA key is not valid");
    rsa_blob(&b, e65537, 3, 129, 0x00, 0xa5, 0x01);
    _cleanup_free_ char *small = line_of("ssh-rsa", &b, NULL);
    assert_refused(small, "RSA keys need at least 2048 bits; this one has 1024");

    /* Forged ECDSA blobs. Take a real point from a created key. */
    struct yun_keypair ec = { 0 };
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ECDSA_P256, 0, NULL, &ec), 0);
    struct blob real = { .size = 0 };
    const char *b64 = strchr(ec.public_key, ' ') + 1;
    assert_int_equal(yun_base64_decode(b64, strlen(b64), 0, real.data, sizeof real.data,
                                       &real.size), 0);
    yun_keypair_done(&ec);
    const uint8_t *point = real.data + real.size - 65;

    b.size = 0;
    blob_cstring(&b, "ecdsa-sha2-nistp256");
    blob_cstring(&b, "nistp384");
    blob_string(&b, point, 65);
    _cleanup_free_ char *wrong_curve = line_of("ecdsa-sha2-nistp256", &b, NULL);
    assert_refused(wrong_curve, "the key data is truncated or malformed");

    uint8_t off[65];
    memcpy(off, point, 65);
    off[64] ^= 1; /* y changed: not on the curve */
    b.size = 0;
    blob_cstring(&b, "ecdsa-sha2-nistp256");
    blob_cstring(&b, "nistp256");
    blob_string(&b, off, 65);
    _cleanup_free_ char *off_curve = line_of("ecdsa-sha2-nistp256", &b, NULL);
    assert_refused(off_curve, "the ECDSA key is not a valid nistp256 point");

    uint8_t compressed[33];
    compressed[0] = 0x02 | (point[64] & 1);
    memcpy(compressed + 1, point + 1, 32);
    b.size = 0;
    blob_cstring(&b, "ecdsa-sha2-nistp256");
    blob_cstring(&b, "nistp256");
    blob_string(&b, compressed, 33);
    _cleanup_free_ char *comp = line_of("ecdsa-sha2-nistp256", &b, NULL);
    assert_refused(comp, "the ECDSA key is not a valid nistp256 point");

    /* Random bytes under every type never crash and never pass. */
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 300; round++) {
        b.size = 0;
        size_t n = 1 + (size_t)(seed % 200);
        for (size_t i = 0; i < n; i++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b.data[b.size++] = (uint8_t)seed;
        }
        for (int t = 0; t < _YUN_KEYPAIR_TYPE_MAX; t++) {
            _cleanup_free_ char *junk = line_of(yun_keypair_type_to_string(t), &b, NULL);
            assert_refused(junk, NULL);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_create_ed25519),
        T(test_create_rsa),
        T(test_create_ecdsa),
        T(test_create_bad_args),
        T(test_type_strings),
        T(test_fingerprint_vector),
        T(test_import_ssh_keygen),
        T(test_import_junk),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
