/* SPDX-License-Identifier: Apache-2.0
 * digest.c: streaming MD5 + SHA-512 (see digest.h). Large chunks are
 * hashed by one helper thread per algorithm, each owning its EVP context:
 * yun_digest_update_start posts the chunk to them and returns, and
 * yun_digest_update_wait joins them, so the caller never reuses a buffer
 * a helper still reads. Small chunks are hashed in the caller's thread. */
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "util.h"

/* Below this a thread hand-off costs more than it saves. */
#define DIGEST_PARALLEL_MIN (64u * 1024u)
#define DIGEST_HELPER_STACK (256u * 1024u)
#define DIGEST_FD_CHUNK (1u << 20)

enum { ALGO_MD5, ALGO_SHA512, _ALGO_MAX };

struct digest_lane {
    EVP_MD_CTX *ctx;      /* NULL when the algorithm is not asked for */
    bool started;         /* the helper thread runs */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    const void *data;     /* the chunk being hashed; borrowed until done */
    size_t size;
    bool busy;            /* a chunk is posted and not yet hashed */
    bool quit;
    int error;            /* of the last chunk */
};

struct yun_digest {
    struct digest_lane lanes[_ALGO_MAX];
    uint64_t size;
    size_t pending;       /* bytes posted by update_start, not yet waited for */
    bool posted;          /* the helpers hold a chunk */
    int error;            /* sticky -EIO */
    bool finished;
    bool threads_failed;  /* a thread could not start: hash in the caller */
};

static void *
lane_main(void *arg)
{
    struct digest_lane *l = arg;
    pthread_mutex_lock(&l->lock);
    for (;;) {
        while (!l->busy && !l->quit)
            pthread_cond_wait(&l->cond, &l->lock);
        if (l->quit)
            break;
        const void *data = l->data;
        size_t size = l->size;
        pthread_mutex_unlock(&l->lock);
        int r = EVP_DigestUpdate(l->ctx, data, size) == 1 ? 0 : -EIO;
        pthread_mutex_lock(&l->lock);
        l->error = r;
        l->busy = false;
        pthread_cond_broadcast(&l->cond);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

static int
lane_start(struct digest_lane *l)
{
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    /* The daemons take signals through signalfd: a thread of ours must
     * never be the one a blocked signal is delivered to. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    (void)pthread_attr_setstacksize(&attr, DIGEST_HELPER_STACK);
    int r = pthread_create(&l->thread, &attr, lane_main, l);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
        return -r;
    }
    l->started = true;
    return 0;
}

static void
lane_post(struct digest_lane *l, const void *data, size_t size)
{
    pthread_mutex_lock(&l->lock);
    l->data = data;
    l->size = size;
    l->busy = true;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

static int
lane_wait(struct digest_lane *l)
{
    pthread_mutex_lock(&l->lock);
    while (l->busy)
        pthread_cond_wait(&l->cond, &l->lock);
    int r = l->error;
    l->data = NULL;
    pthread_mutex_unlock(&l->lock);
    return r;
}

static void
lane_stop(struct digest_lane *l)
{
    if (!l->started)
        return;
    pthread_mutex_lock(&l->lock);
    l->quit = true;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    l->started = false;
}

/* Starts a digest (see digest.h). */
int
yun_digest_new(unsigned algos, struct yun_digest **ret)
{
    if (!ret || algos == 0 || (algos & ~(unsigned)YUN_DIGEST_ALL))
        return -EINVAL;
    struct yun_digest *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    static const struct {
        unsigned bit;
        int lane;
    } map[] = { { YUN_DIGEST_MD5, ALGO_MD5 }, { YUN_DIGEST_SHA512, ALGO_SHA512 } };
    for (size_t i = 0; i < ELEMENTSOF(map); i++) {
        if (!(algos & map[i].bit))
            continue;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        d->lanes[map[i].lane].ctx = ctx;
        const EVP_MD *md = map[i].lane == ALGO_MD5 ? EVP_md5() : EVP_sha512();
        if (!ctx || EVP_DigestInit_ex(ctx, md, NULL) != 1) {
            yun_digest_free(d);
            return -EIO;
        }
    }
    *ret = d;
    return 0;
}

/* Frees 'd' (NULL ok), first waiting for a chunk its helpers still hash
 * and stopping them. Returns NULL. */
struct yun_digest *
yun_digest_free(struct yun_digest *d)
{
    if (!d)
        return NULL;
    (void)yun_digest_update_wait(d);
    for (int i = 0; i < _ALGO_MAX; i++) {
        lane_stop(&d->lanes[i]);
        EVP_MD_CTX_free(d->lanes[i].ctx);
    }
    free(d);
    return NULL;
}

/* Starts hashing 'size' bytes of 'data' (see digest.h). Returns 0, -EINVAL
 * after final or while a chunk is posted, or the sticky -EIO. */
int
yun_digest_update_start(struct yun_digest *d, const void *data, size_t size)
{
    if (!d || (!data && size) || d->finished || d->posted)
        return -EINVAL;
    if (d->error < 0)
        return d->error;
    if (size == 0)
        return 0;

    if (size >= DIGEST_PARALLEL_MIN && !d->threads_failed) {
        bool ok = true;
        for (int i = 0; i < _ALGO_MAX && ok; i++)
            if (d->lanes[i].ctx && !d->lanes[i].started && lane_start(&d->lanes[i]) < 0)
                ok = false;
        if (ok) {
            for (int i = 0; i < _ALGO_MAX; i++)
                if (d->lanes[i].ctx)
                    lane_post(&d->lanes[i], data, size);
            d->posted = true;
            d->pending = size;
            return 0;
        }
        /* Fewer threads than wanted: the ones started stay idle and the
         * caller hashes from now on. */
        d->threads_failed = true;
    }

    for (int i = 0; i < _ALGO_MAX; i++)
        if (d->lanes[i].ctx && EVP_DigestUpdate(d->lanes[i].ctx, data, size) != 1)
            return d->error = -EIO;
    d->size += size;
    return 0;
}

/* Waits until the chunk of the last update_start is hashed (see
 * digest.h). Returns 0 or the sticky -EIO. */
int
yun_digest_update_wait(struct yun_digest *d)
{
    if (!d)
        return -EINVAL;
    if (!d->posted)
        return d->error;
    int r = 0;
    for (int i = 0; i < _ALGO_MAX; i++)
        if (d->lanes[i].ctx && d->lanes[i].started) {
            int e = lane_wait(&d->lanes[i]);
            if (e < 0)
                r = e;
        }
    d->posted = false;
    if (r < 0)
        return d->error = r;
    d->size += d->pending;
    d->pending = 0;
    return d->error;
}

/* Hashes 'size' bytes of 'data' into every algorithm of 'd' before
 * returning. Returns 0, -EIO (sticky) or -EINVAL after final. */
int
yun_digest_update(struct yun_digest *d, const void *data, size_t size)
{
    int r = yun_digest_update_start(d, data, size);
    if (r < 0)
        return r;
    return yun_digest_update_wait(d);
}

static int
final_hex(EVP_MD_CTX *ctx, char *out, size_t out_size)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx, md, &n) != 1 || 2 * (size_t)n + 1 > out_size)
        return -EIO;
    yun_hex_encode(md, n, out);
    return 0;
}

/* Ends 'd' and fills '*ret' (see digest.h). Returns 0, -EIO, or -EINVAL
 * when called twice or with a chunk still posted. The helper threads are
 * stopped: 'd' only awaits free. */
int
yun_digest_final(struct yun_digest *d, struct yun_digest_result *ret)
{
    if (!d || !ret || d->finished || d->posted)
        return -EINVAL;
    if (d->error < 0)
        return d->error;
    for (int i = 0; i < _ALGO_MAX; i++)
        lane_stop(&d->lanes[i]);
    d->finished = true;

    struct yun_digest_result res = { .size = d->size };
    int r = 0;
    if (d->lanes[ALGO_MD5].ctx)
        r = final_hex(d->lanes[ALGO_MD5].ctx, res.md5, sizeof res.md5);
    if (r >= 0 && d->lanes[ALGO_SHA512].ctx)
        r = final_hex(d->lanes[ALGO_SHA512].ctx, res.sha512, sizeof res.sha512);
    if (r < 0)
        return d->error = r;
    *ret = res;
    return 0;
}

/* Hashes the whole of 'fd' with pread from offset 0, reading the next
 * block while the helpers hash the previous one. Returns 0 and '*ret', or
 * a negative errno from pread or the digest. */
int
yun_digest_fd(int fd, unsigned algos, struct yun_digest_result *ret)
{
    if (fd < 0 || !ret)
        return -EINVAL;
    _cleanup_(yun_digest_freep) struct yun_digest *d = NULL;
    int r = yun_digest_new(algos, &d);
    if (r < 0)
        return r;
    _cleanup_free_ uint8_t *bufs = malloc(2 * DIGEST_FD_CHUNK);
    if (!bufs)
        return -ENOMEM;
    off_t off = 0;
    for (int which = 0;; which ^= 1) {
        uint8_t *buf = bufs + (size_t)which * DIGEST_FD_CHUNK;
        ssize_t n;
        do
            n = pread(fd, buf, DIGEST_FD_CHUNK, off);
        while (n < 0 && errno == EINTR);
        int e = n < 0 ? -errno : 0;
        r = yun_digest_update_wait(d);
        if (e < 0)
            return e;
        if (r < 0)
            return r;
        if (n == 0)
            break;
        r = yun_digest_update_start(d, buf, (size_t)n);
        if (r < 0)
            return r;
        off += n;
    }
    return yun_digest_final(d, ret);
}

/* True when 'hex' is exactly 'len' characters of [0-9a-fA-F]. */
bool
yun_digest_hex_is_valid(const char *hex, size_t len)
{
    if (!hex || strlen(hex) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789abcdefABCDEF", hex[i]))
            return false;
    return true;
}

/* True when 'a' and 'b' are the same hex string, ignoring case. Digests
 * are not secrets: no constant-time compare is needed. */
bool
yun_digest_hex_equal(const char *a, const char *b)
{
    return a && b && strcasecmp(a, b) == 0;
}
