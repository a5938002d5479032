/* SPDX-License-Identifier: Apache-2.0
 * envelope.c: sealing, parsing and opening bus envelopes, and the replay
 * and reply cache (see envelope.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "cleanup.h"
#include "envelope.h"
#include "err.h"
#include "pbwire.h"
#include "util.h"
#include "yun.pb-c.h"

int
yun_envelope_seal(const struct yun_key *key, const struct yun_envelope_out *out,
                  const void *body, size_t body_size, size_t max_body, uint8_t **ret,
                  size_t *ret_size)
{
    if (body_size > max_body)
        return YUN_E_TOOBIG;
    if (!out->sender || !out->key_id || !out->request_id ||
        strlen(out->request_id) > YUN_REQUEST_ID_MAX)
        return -EINVAL;

    uint8_t nonce[YUN_NONCE_SIZE];
    int r = yun_nonce_new(nonce);
    if (r < 0)
        return r;

    Yun__Header h = YUN__HEADER__INIT;
    h.version = YUN_ENVELOPE_VERSION;
    h.sender = (char *)out->sender;
    h.key_id = (char *)out->key_id;
    h.key_epoch = out->key_epoch;
    h.timestamp_us = yun_wall_us();
    h.nonce.data = nonce;
    h.nonce.len = sizeof nonce;
    h.request_id = (char *)out->request_id;
    h.token.data = (uint8_t *)out->token;
    h.token.len = out->token ? out->token_size : 0;
    h.body_size = (uint32_t)body_size;

    /* The Envelope is laid out here rather than by protobuf-c, so that
     * the body is sealed straight into the message that goes out instead
     * of into a buffer copied into it: field 1 (header) and field 2
     * (sealed), length-delimited, in field order; reject (field 3) is 0
     * and so absent, as proto3 packs it. */
    size_t hsize = yun__header__get_packed_size(&h);
    size_t ssize = body_size + YUN_TAG_SIZE;
    size_t esize = 1 + pbwire_varint_size(hsize) + hsize + 1 + pbwire_varint_size(ssize) + ssize;
    _cleanup_free_ uint8_t *buf = malloc(esize);
    if (!buf)
        return -ENOMEM;
    uint8_t *p = buf;
    *p++ = (1 << 3) | 2;
    p += pbwire_varint_put(p, hsize);
    const uint8_t *hbuf = p;
    p += yun__header__pack(&h, p);
    *p++ = (2 << 3) | 2;
    p += pbwire_varint_put(p, ssize);
    r = yun_seal(key, nonce, hbuf, hsize, body, body_size, p);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(buf);
    *ret_size = esize;
    return 0;
}

int
yun_envelope_reject(int code, const char *request_id, uint8_t **ret, size_t *ret_size)
{
    Yun__Header h = YUN__HEADER__INIT;
    h.version = YUN_ENVELOPE_VERSION;
    h.sender = (char *)"scheduler";
    h.key_id = (char *)"";
    h.timestamp_us = yun_wall_us();
    h.request_id = (char *)(request_id ? request_id : "");
    size_t hsize = yun__header__get_packed_size(&h);
    _cleanup_free_ uint8_t *hbuf = malloc(hsize);
    if (!hbuf)
        return -ENOMEM;
    yun__header__pack(&h, hbuf);

    Yun__Envelope e = YUN__ENVELOPE__INIT;
    e.header.data = hbuf;
    e.header.len = hsize;
    e.reject = code < 0 ? code : YUN_E_DECODE;
    size_t esize = yun__envelope__get_packed_size(&e);
    uint8_t *buf = malloc(esize);
    if (!buf)
        return -ENOMEM;
    yun__envelope__pack(&e, buf);
    *ret = buf;
    *ret_size = esize;
    return 0;
}

static bool
field_is_printable(const char *s, size_t max_len)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e || n >= max_len)
            return false;
    return true;
}

/* What a rejected message shows the caller's log line: the field when it is
 * short and printable, else nothing. Unchecked bytes from the network would
 * otherwise let anyone forge log lines. */
static const char *
field_for_log(const char *s, size_t max_len)
{
    return s && field_is_printable(s, max_len) ? s : NULL;
}

/* A failed parse keeps the header for the log line but drops the sealed
 * part, so that yun_envelope_open() refuses it (-EINVAL) instead of
 * trusting sizes and a nonce that were never checked. */
static int
parse_fail(struct yun_envelope_in *in, int r)
{
    in->env = NULL;
    in->sealed = NULL;
    in->sealed_size = 0;
    return r;
}

/* Finds the Envelope's fields in 'buf' without copying them (the sealed
 * part is the whole message's size): as protobuf-c would decode it. */
static int
scan_envelope(const uint8_t *buf, size_t size, struct yun_envelope_in *in, int32_t *ret_reject)
{
    const uint8_t *p = buf, *end = buf + size;
    struct pbwire_field f;
    int32_t reject = 0;
    int n;
    while ((n = pbwire_next(&p, end, &f)) > 0) {
        if (f.number == 1 || f.number == 2) {
            if (f.wire_type != PBWIRE_LEN)
                return -1;
            if (f.number == 1) {
                in->header = f.data;
                in->header_size = f.size;
            } else {
                in->sealed = f.data;
                in->sealed_size = f.size;
            }
        } else if (f.number == 3) {
            if (f.wire_type != PBWIRE_VARINT)
                return -1;
            uint32_t z = (uint32_t)f.varint; /* sint32: zigzag in 32 bits */
            reject = (int32_t)((z >> 1) ^ (~(z & 1) + 1));
        }
    }
    *ret_reject = reject;
    return n;
}

int
yun_envelope_parse(const void *buf, size_t size, size_t max_body, struct yun_envelope_in *in)
{
    memset(in, 0, sizeof *in);
    if (size > max_body + YUN_ENVELOPE_OVERHEAD)
        return YUN_E_TOOBIG;

    int32_t reject = 0;
    if (scan_envelope(buf, size, in, &reject) < 0) {
        memset(in, 0, sizeof *in);
        return YUN_E_DECODE;
    }
    in->env = buf;
    /* Absent fields are empty, as protobuf-c leaves them. */
    static const uint8_t empty[1];
    if (!in->header)
        in->header = empty;
    if (!in->sealed)
        in->sealed = empty;

    if (reject != 0) {
        /* Only a code in yun's range is believable; anything else is noise. */
        in->reject = reject > _YUN_E_LAST && reject < _YUN_E_FIRST ? reject : YUN_E_DECODE;
        Yun__Header *h = yun__header__unpack(NULL, in->header_size, in->header);
        if (h) {
            in->hdr = h;
            in->request_id = field_for_log(h->request_id, YUN_REQUEST_ID_MAX);
        }
        return 0;
    }

    Yun__Header *h = yun__header__unpack(NULL, in->header_size, in->header);
    if (!h) {
        yun_envelope_in_done(in);
        return YUN_E_DECODE;
    }
    in->hdr = h;
    in->version = h->version;
    in->sender = field_for_log(h->sender, YUN_PEER_ID_MAX);
    in->key_id = field_for_log(h->key_id, YUN_PEER_ID_MAX);
    in->key_epoch = h->key_epoch;
    in->timestamp_us = h->timestamp_us;
    in->nonce = h->nonce.data;
    in->request_id = field_for_log(h->request_id, YUN_REQUEST_ID_MAX);
    in->token = h->token.data;
    in->token_size = h->token.len;
    in->body_size = h->body_size;

    int r = 0;
    if (h->version != YUN_ENVELOPE_VERSION)
        r = YUN_E_VERSION;
    else if (h->body_size > max_body)
        r = YUN_E_TOOBIG;
    else if (h->nonce.len != YUN_NONCE_SIZE || !in->sender || !*in->sender || !in->key_id ||
             !*in->key_id || !in->request_id ||
             (size_t)h->body_size + YUN_TAG_SIZE != in->sealed_size)
        r = YUN_E_DECODE;
    if (r < 0) {
        /* Keep the fields for the caller's log line, but say it failed. */
        return parse_fail(in, r);
    }
    return 0;
}

int
yun_envelope_open(const struct yun_envelope_in *in, const struct yun_key *key, uint64_t now_us,
                  uint64_t window_us, uint8_t **ret_body, size_t *ret_size)
{
    if (!in->env || !in->sealed || !in->hdr || in->reject)
        return -EINVAL;
    size_t plain = in->body_size;
    /* +1: malloc(0) may return NULL, and callers like a terminating byte. */
    _cleanup_free_ uint8_t *body = malloc(plain + 1);
    if (!body)
        return -ENOMEM;
    int r = yun_open(key, in->nonce, in->header, in->header_size, in->sealed, in->sealed_size,
                     body);
    if (r < 0)
        return r;
    /* Checked after the seal, so that the timestamp is the sender's own. */
    if (in->timestamp_us + window_us < now_us || in->timestamp_us > now_us + window_us)
        return YUN_E_STALE;
    body[plain] = 0;
    *ret_body = TAKE_PTR(body);
    *ret_size = plain;
    return 0;
}

void
yun_envelope_in_done(struct yun_envelope_in *in)
{
    if (in->hdr)
        yun__header__free_unpacked(in->hdr, NULL);
    memset(in, 0, sizeof *in);
}

/* ---- replay and reply cache ---- */

/* Nonces live in a ring in arrival order (expiry pops its head) and are
 * found through an open-addressed index of (hash, ring slot) pairs: no
 * allocation per message, and a look-up touches one index line and, on a
 * hash match only, one ring entry. At 20 000 messages/s the set holds over
 * a million nonces, so the chained, malloc'ed entries this replaced made
 * every request slower the longer a scheduler ran. */
struct nonce_entry {
    uint8_t nonce[YUN_NONCE_SIZE];
    uint32_t pad;
    uint64_t expire_us;
};

/* An index slot: the nonce's hash in the high half, ring slot + 1 in the
 * low half; 0 is empty. */
#define NIDX_SLOT(v) ((uint32_t)(v))
#define NIDX_HASH(v) ((uint32_t)((v) >> 32))
#define NONCE_RING_MIN 1024u

struct reply_entry {
    uint64_t expire_us;
    struct reply_entry *hnext;
    struct reply_entry *qnext, *qprev;
    uint64_t hash;
    size_t key_size;
    size_t size;
    uint8_t *data;
    char key[]; /* key_id NUL request_id */
};

struct yun_replay_cache {
    uint64_t window_us;
    uint64_t seed;

    struct nonce_entry *ring; /* nring entries, a power of two */
    uint64_t *nidx;           /* 2 * nring slots */
    size_t nring, nhead, ncount;

    struct reply_entry **rbuckets;
    size_t rbucket_count;
    size_t rcount, rmax;
    size_t rbytes;       /* bytes of cached replies */
    struct reply_entry *rhead, *rtail;
};

static uint64_t
mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t
hash_bytes(uint64_t seed, const void *data, size_t size)
{
    /* FNV-1a folded through a finaliser; the inputs come only from peers
     * whose seal opened, so this needs to spread, not to resist attack. */
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < size; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return mix64(h);
}

int
yun_replay_cache_new(uint64_t window_us, size_t max_replies, struct yun_replay_cache **ret)
{
    struct yun_replay_cache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->window_us = window_us;
    c->rmax = max_replies ? max_replies : 1;
    c->nring = NONCE_RING_MIN;
    /* As many buckets as replies kept: the cache is consulted on every
     * request, so its chains must stay about one entry long. */
    c->rbucket_count = 1024;
    while (c->rbucket_count < c->rmax && c->rbucket_count < (SIZE_MAX >> 2))
        c->rbucket_count *= 2;
    c->ring = calloc(c->nring, sizeof *c->ring);
    c->nidx = calloc(2 * c->nring, sizeof *c->nidx);
    c->rbuckets = calloc(c->rbucket_count, sizeof *c->rbuckets);
    uint8_t seed[8];
    if (!c->ring || !c->nidx || !c->rbuckets || RAND_bytes(seed, sizeof seed) != 1) {
        yun_replay_cache_free(c);
        return -ENOMEM;
    }
    memcpy(&c->seed, seed, sizeof c->seed);
    *ret = c;
    return 0;
}

static void
reply_unlink(struct yun_replay_cache *c, struct reply_entry *e)
{
    struct reply_entry **pp = &c->rbuckets[e->hash & (c->rbucket_count - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->qprev)
        e->qprev->qnext = e->qnext;
    else
        c->rhead = e->qnext;
    if (e->qnext)
        e->qnext->qprev = e->qprev;
    else
        c->rtail = e->qprev;
    c->rbytes -= e->size;
    free(e->data);
    free(e);
    c->rcount--;
}

struct yun_replay_cache *
yun_replay_cache_free(struct yun_replay_cache *c)
{
    if (!c)
        return NULL;
    while (c->rhead)
        reply_unlink(c, c->rhead);
    free(c->ring);
    free(c->nidx);
    free(c->rbuckets);
    free(c);
    return NULL;
}

static uint32_t
nonce_hash(const struct yun_replay_cache *c, const uint8_t nonce[YUN_NONCE_SIZE])
{
    /* Nonces come only from peers whose seal opened and are random; a
     * seeded mix spreads them, it need not resist attack. */
    uint64_t a;
    uint32_t b;
    memcpy(&a, nonce, sizeof a);
    memcpy(&b, nonce + sizeof a, sizeof b);
    uint64_t h = mix64(a ^ c->seed) ^ mix64(((uint64_t)b << 17) ^ ~c->seed);
    return (uint32_t)(h >> 32);
}

static size_t
nidx_home(const struct yun_replay_cache *c, uint32_t hash)
{
    /* The hash's low bits pick the home slot; 2 * nring <= 2^32. */
    return hash & (2 * c->nring - 1);
}

static struct nonce_entry *
ring_at(const struct yun_replay_cache *c, size_t i)
{
    return &c->ring[(c->nhead + i) & (c->nring - 1)];
}

/* Rebuilds ring and index at 'n' entries (a power of two >= ncount), the
 * live nonces moved to its start in arrival order. */
static int
nonce_resize(struct yun_replay_cache *c, size_t n)
{
    if (n > (size_t)UINT32_MAX / 2)
        return -ENOMEM;
    struct nonce_entry *ring = malloc(n * sizeof *ring);
    uint64_t *idx = calloc(2 * n, sizeof *idx);
    if (!ring || !idx) {
        free(ring);
        free(idx);
        return -ENOMEM;
    }
    for (size_t i = 0; i < c->ncount; i++)
        ring[i] = *ring_at(c, i);
    free(c->ring);
    free(c->nidx);
    c->ring = ring;
    c->nidx = idx;
    c->nring = n;
    c->nhead = 0;
    for (size_t i = 0; i < c->ncount; i++) {
        uint32_t h = nonce_hash(c, ring[i].nonce);
        size_t j = nidx_home(c, h);
        while (idx[j])
            j = (j + 1) & (2 * n - 1);
        idx[j] = (uint64_t)h << 32 | (uint32_t)(i + 1);
    }
    return 0;
}

/* Removes the ring's head from the index (backward-shift deletion: the
 * probe runs stay unbroken without tombstones) and from the ring. */
static void
nonce_pop(struct yun_replay_cache *c)
{
    size_t mask = 2 * c->nring - 1;
    uint32_t slot = (uint32_t)c->nhead + 1;
    uint32_t h = nonce_hash(c, c->ring[c->nhead].nonce);
    size_t i = nidx_home(c, h);
    while (c->nidx[i] && NIDX_SLOT(c->nidx[i]) != slot)
        i = (i + 1) & mask;
    if (c->nidx[i]) {
        for (size_t j = (i + 1) & mask; c->nidx[j]; j = (j + 1) & mask) {
            size_t home = nidx_home(c, NIDX_HASH(c->nidx[j]));
            /* Move j back into the hole at i unless its home lies in the
             * cyclic range (i, j]. */
            bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) {
                c->nidx[i] = c->nidx[j];
                i = j;
            }
        }
        c->nidx[i] = 0;
    }
    c->nhead = (c->nhead + 1) & (c->nring - 1);
    c->ncount--;
}

void
yun_replay_cache_expire(struct yun_replay_cache *c, uint64_t now_us)
{
    /* Expired nonces are popped from the head, in arrival order. One that
     * must be kept longer (its sender's clock is ahead) holds those behind
     * it until it goes: they are remembered a little longer than needed,
     * never shorter. A clock that steps back only delays expiry. */
    /* '<', not '<=': open() still accepts a message at exactly the window's
     * edge, and that is the last instant its nonce must be remembered. */
    while (c->ncount && c->ring[c->nhead].expire_us < now_us)
        nonce_pop(c);
    /* Give memory back after a burst; it halves only when a quarter is in
     * use, so a steady rate never flips between two sizes. */
    if (c->nring > NONCE_RING_MIN && c->ncount < c->nring / 4)
        (void)nonce_resize(c, c->nring / 2);
    while (c->rhead && c->rhead->expire_us <= now_us)
        reply_unlink(c, c->rhead);
}

int
yun_replay_cache_check_nonce(struct yun_replay_cache *c, const uint8_t *nonce, uint64_t sent_us,
                             uint64_t now_us)
{
    yun_replay_cache_expire(c, now_us);
    uint32_t h = nonce_hash(c, nonce);
    size_t mask = 2 * c->nring - 1;
    size_t i = nidx_home(c, h);
    for (; c->nidx[i]; i = (i + 1) & mask)
        if (NIDX_HASH(c->nidx[i]) == h &&
            memcmp(c->ring[NIDX_SLOT(c->nidx[i]) - 1].nonce, nonce, YUN_NONCE_SIZE) == 0)
            return YUN_E_REPLAY;

    if (c->ncount == c->nring) {
        int r = nonce_resize(c, 2 * c->nring);
        if (r < 0)
            return r;
        mask = 2 * c->nring - 1;
        for (i = nidx_home(c, h); c->nidx[i]; i = (i + 1) & mask)
            ;
    }
    size_t slot = (c->nhead + c->ncount) & (c->nring - 1);
    struct nonce_entry *e = &c->ring[slot];
    memcpy(e->nonce, nonce, YUN_NONCE_SIZE);
    e->pad = 0;
    /* open() accepts the message while now <= sent + window; that is how
     * long a replay of it must be caught. */
    e->expire_us = sent_us + c->window_us;
    if (e->expire_us < now_us)
        e->expire_us = now_us;
    c->nidx[i] = (uint64_t)h << 32 | (uint32_t)(slot + 1);
    c->ncount++;
    return 0;
}

static size_t
reply_key(const char *key_id, const char *request_id, char *buf, size_t size)
{
    size_t a = strlen(key_id), b = strlen(request_id);
    if (a + b + 2 > size)
        return 0;
    memcpy(buf, key_id, a + 1);
    memcpy(buf + a + 1, request_id, b + 1);
    return a + b + 2;
}

static struct reply_entry *
reply_find(struct yun_replay_cache *c, const char *key, size_t key_size, uint64_t hash)
{
    for (struct reply_entry *e = c->rbuckets[hash & (c->rbucket_count - 1)]; e; e = e->hnext)
        if (e->hash == hash && e->key_size == key_size && memcmp(e->key, key, key_size) == 0)
            return e;
    return NULL;
}

int
yun_replay_cache_get_reply(struct yun_replay_cache *c, const char *key_id,
                           const char *request_id, const uint8_t **ret, size_t *ret_size)
{
    char key[2 * YUN_PEER_ID_MAX + YUN_REQUEST_ID_MAX + 4];
    size_t ks = reply_key(key_id, request_id, key, sizeof key);
    if (ks == 0)
        return -ENOENT;
    struct reply_entry *e = reply_find(c, key, ks, hash_bytes(c->seed, key, ks));
    if (!e)
        return -ENOENT;
    *ret = e->data;
    *ret_size = e->size;
    return 0;
}

static int
put_reply(struct yun_replay_cache *c, const char *key_id, const char *request_id,
          uint8_t **reply, size_t size, uint64_t now_us)
{
    char key[2 * YUN_PEER_ID_MAX + YUN_REQUEST_ID_MAX + 4];
    size_t ks = reply_key(key_id, request_id, key, sizeof key);
    if (ks == 0 || !*request_id)
        return -EINVAL;
    uint64_t hash = hash_bytes(c->seed, key, ks);
    struct reply_entry *old = reply_find(c, key, ks, hash);
    if (old)
        reply_unlink(c, old);
    /* Bounded by count and by bytes: a few large replies (image chunks)
     * must not pin gigabytes. */
    while ((c->rcount >= c->rmax || c->rbytes + size > YUN_REPLAY_CACHE_MAX_BYTES) && c->rhead)
        reply_unlink(c, c->rhead);

    struct reply_entry *e = calloc(1, sizeof *e + ks);
    if (!e)
        return -ENOMEM;
    e->data = TAKE_PTR(*reply);
    memcpy(e->key, key, ks);
    e->key_size = ks;
    e->size = size;
    e->hash = hash;
    e->expire_us = now_us + 2 * c->window_us;
    size_t i = hash & (c->rbucket_count - 1);
    e->hnext = c->rbuckets[i];
    c->rbuckets[i] = e;
    e->qprev = c->rtail;
    if (c->rtail)
        c->rtail->qnext = e;
    else
        c->rhead = e;
    c->rtail = e;
    c->rcount++;
    c->rbytes += size;
    return 0;
}

int
yun_replay_cache_put_reply(struct yun_replay_cache *c, const char *key_id,
                           const char *request_id, const void *reply, size_t size,
                           uint64_t now_us)
{
    _cleanup_free_ uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, reply, size);
    return put_reply(c, key_id, request_id, &copy, size, now_us);
}

int
yun_replay_cache_put_reply_take(struct yun_replay_cache *c, const char *key_id,
                                const char *request_id, uint8_t **reply, size_t size,
                                uint64_t now_us)
{
    return put_reply(c, key_id, request_id, reply, size, now_us);
}

size_t
yun_replay_cache_nonces(const struct yun_replay_cache *c)
{
    return c->ncount;
}
