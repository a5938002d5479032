/* SPDX-License-Identifier: Apache-2.0
 * fuzz-identity.c: libFuzzer target for the parsers of identity's crypto
 * core, which all see user input: SSH public key import (common/keypair.c),
 * token validation (common/token.c, against a key repository made once in
 * a temporary directory), the password hash parser (common/password.c,
 * through yun_password_needs_rehash, which parses without deriving) and
 * strict base64 (common/base64.c) in its four spellings.
 *
 * The input is used whole as one string for each of them (cut at the
 * first NUL). A token or key that is accepted must also re-encode to
 * itself; otherwise the target aborts.
 *
 * Built by tests/fuzz/CMakeLists.txt; by hand, from the source root:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icommon \
 *     common/base64.c common/password.c common/token.c common/keypair.c \
 *     common/seal.c common/util.c common/err.c tests/fuzz/fuzz-identity.c \
 *     -lcrypto -o /tmp/fuzz-identity && /tmp/fuzz-identity -max_total_time=60 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "keypair.h"
#include "password.h"
#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct yun_token_keys *keys;

static void
init_keys(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[4096], keydir[4200];
    snprintf(dir, sizeof dir, "%s/fuzz-identity.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        abort();
    snprintf(keydir, sizeof keydir, "%s/keys", dir);
    if (yun_token_keys_create(keydir) < 0 || yun_token_keys_load(keydir, &keys) < 0)
        abort();
    /* The keys are in memory now; the files are not needed. */
    char path[4300];
    snprintf(path, sizeof path, "%s/0", keydir);
    (void)remove(path);
    snprintf(path, sizeof path, "%s/1", keydir);
    (void)remove(path);
    (void)remove(keydir);
    (void)remove(dir);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!keys)
        init_keys();
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t len = strlen(s);

    struct yun_keypair kp = { 0 };
    char *msg = NULL;
    if (yun_keypair_import(s, &kp, &msg) == 0) {
        /* Canonical: importing the canonical line gives the same key. */
        struct yun_keypair again = { 0 };
        if (yun_keypair_import(kp.public_key, &again, NULL) != 0 ||
            strcmp(again.public_key, kp.public_key) != 0 ||
            strcmp(again.fingerprint, kp.fingerprint) != 0)
            abort();
        yun_keypair_done(&again);
    }
    yun_keypair_done(&kp);
    free(msg);

    struct yun_token t;
    (void)yun_token_validate(keys, s, 0, &t);

    (void)yun_password_needs_rehash(s);

    static const unsigned flag_sets[] = { 0, YUN_BASE64_NOPAD, YUN_BASE64_URL,
                                          YUN_BASE64_URL | YUN_BASE64_NOPAD };
    uint8_t *out = malloc(len + 1);
    char *text = malloc(len + 8);
    for (size_t i = 0; out && text && i < 4; i++) {
        size_t n;
        if (yun_base64_decode(s, len, flag_sets[i], out, len + 1, &n) == 0) {
            /* Strict decoding: one text per byte string. */
            yun_base64_encode(out, n, flag_sets[i], text);
            if (strcmp(text, s) != 0)
                abort();
        }
    }
    free(out);
    free(text);
    free(s);
    return 0;
}
