/* SPDX-License-Identifier: Apache-2.0
 * placement.c: the placement engine behind placement.h (issue 4): an
 * in-memory index of the compute hosts that picks a host per instance in
 * about O(log n), and the durable claims in LMDB ("claims", "host_usage")
 * that make two concurrent boots unable to take the same last slot.
 *
 * The index (docs/placement.md has the full argument and the figures):
 *   - Each schedulable host (up and enabled) sits in two AVL trees, the
 *     cloud-wide one and its zone's, ordered by its RAM weigher key (free
 *     RAM, negated when packing) descending, then by id. Every node also
 *     keeps the most free vCPUs, RAM and disk in its subtree. A pick walks
 *     the request's tree in order from the best key, skipping whole
 *     subtrees that cannot hold the flavor, and stops at the first host
 *     that passes every filter: down, disabled and other-zone hosts are
 *     not in the tree, hosts without room are skipped by the aggregates,
 *     so the walk steps only over hosts failing the arch, hypervisor,
 *     anti-affinity or ignore filters.
 *   - Weighers other than RAM only add a bonus (the image cache, soft
 *     affinity) or a malus (soft anti-affinity) to known hosts: the walk
 *     skips the server group's hosts, which are scored one by one, and
 *     the hosts caching the image are scored one by one while they are
 *     few, or walked in the image's own tree (same order, holders only)
 *     once they are many, stopping at the first that passes.
 *   - Claims and releases re-key the host: O(log n) per tree it is in
 *     (two, plus one per popular image it caches).
 * The scheduler is single-threaded; nothing here locks. */
#include <errno.h>
#include <inttypes.h>
#include <math.h> /* isfinite: a macro, no libm */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "placement.h"
#include "store.h"
#include "util.h"
#include "compute.pb-c.h"
#include "host.pb-c.h"

YUN_LOG_MODULE("sched.placement");

#define DB_HOSTS "hosts"
#define DB_CLAIMS "claims"
#define DB_USAGE "host_usage"

#define HOST_IMAGES_MAX 4096       /* as host.c's limit on cached images */
#define REQUEST_LIST_MAX 65536     /* group members or ignored hosts per request */
/* An image whose holders pass IMAGE_POPULAR_ON gets a tree of its own and
 * loses it below IMAGE_POPULAR_OFF (hysteresis: a host flapping at the
 * threshold does not rebuild the tree each time). Below, its holders are
 * scored one by one: at most IMAGE_POPULAR_ON filter checks. */
#define IMAGE_POPULAR_ON 32
#define IMAGE_POPULAR_OFF 16

#define ARCH_SIZE 32               /* host.c: arch < 32 bytes */
#define HV_SIZE 64                 /* hypervisor_type < 64 */
#define VIRT_SIZE 16               /* virt_type < 16 */

/* ---- A string-keyed hash map: open addressing, linear probing. Keys are
 * borrowed from the values they index, which outlive their entries. */

struct strmap_slot {
    const char *key;
    void *val;
    uint64_t hash;
};

struct strmap {
    struct strmap_slot *slots;
    size_t mask;                   /* slots - 1; slots is a power of two */
    size_t n;
};

/* Eight bytes per step (ids are 36-byte UUIDs), then a final mix. */
static uint64_t
str_hash(const char *s)
{
    size_t len = strlen(s);
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
    for (; len >= 8; s += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, s, len);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    h *= 0xd6e8feb86659fd93ULL;
    return h ^ (h >> 32);
}

static struct strmap_slot *
strmap_find(const struct strmap *m, const char *key)
{
    if (!m->slots || !key)
        return NULL;
    uint64_t hash = str_hash(key);
    for (size_t i = hash & m->mask;; i = (i + 1) & m->mask) {
        struct strmap_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->hash == hash && strcmp(s->key, key) == 0)
            return s;
    }
}

static void *
strmap_get(const struct strmap *m, const char *key)
{
    struct strmap_slot *s = strmap_find(m, key);
    return s ? s->val : NULL;
}

static void
strmap_place(struct strmap_slot *slots, size_t mask, const struct strmap_slot *e)
{
    size_t i = e->hash & mask;
    while (slots[i].key)
        i = (i + 1) & mask;
    slots[i] = *e;
}

/* Makes room for one more key, so that the strmap_put that follows cannot
 * fail. Load stays at most one half. */
static int
strmap_reserve(struct strmap *m)
{
    size_t cap = m->slots ? m->mask + 1 : 0;
    if ((m->n + 1) * 2 <= cap)
        return 0;
    size_t ncap = cap ? cap * 2 : 16;
    struct strmap_slot *slots = calloc(ncap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        if (m->slots[i].key)
            strmap_place(slots, ncap - 1, &m->slots[i]);
    free(m->slots);
    m->slots = slots;
    m->mask = ncap - 1;
    return 0;
}

/* 'key' must be absent and strmap_reserve must have succeeded. */
static void
strmap_put(struct strmap *m, const char *key, void *val)
{
    struct strmap_slot e = { .key = key, .val = val, .hash = str_hash(key) };
    strmap_place(m->slots, m->mask, &e);
    m->n++;
}

static void
strmap_del(struct strmap *m, const char *key)
{
    struct strmap_slot *s = strmap_find(m, key);
    if (!s)
        return;
    /* Backward-shift deletion: no tombstones, so probes stay short. */
    size_t i = (size_t)(s - m->slots);
    for (size_t j = (i + 1) & m->mask; m->slots[j].key; j = (j + 1) & m->mask) {
        size_t home = m->slots[j].hash & m->mask;
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->slots[i] = (struct strmap_slot){ 0 };
    m->n--;
}

static void
strmap_done(struct strmap *m)
{
    free(m->slots);
    *m = (struct strmap){ 0 };
}

/* ---- An intrusive AVL tree of hosts, ordered by placement_host.key
 * descending then id ascending: the order of the RAM weigher. Each node
 * also holds the most free vCPUs, RAM and disk of any host in its
 * subtree, so that a walk skips whole subtrees in which no host has room
 * (typically disk or vCPUs run out before RAM on some hosts: without
 * this, every pick would step over all of them). */

struct placement_host;

struct avl_node {
    struct avl_node *left, *right, *parent;
    struct placement_host *host;
    int height;                    /* 0 = not in a tree */
    int64_t max_vcpus;             /* most free vCPUs in the subtree */
    int64_t max_ram;
    int64_t max_disk;
};

/* What a host needs to have free to be worth looking at. */
struct fit {
    int64_t vcpus, ram, disk;
};

struct avl_tree {
    struct avl_node *root;
    size_t n;
};

/* The placement structures, declared here because the tree compares
 * hosts. */

struct placement_image {
    char *id;
    struct placement_host **holders; /* every host caching it, any state */
    size_t n_holders;
    size_t holders_cap;
    bool popular;                  /* 'tree' is maintained */
    struct avl_tree tree;          /* the schedulable holders, while popular */
};

/* One cached image of a host; a host's entries are sorted by 'img'. */
struct host_image {
    struct placement_image *img;
    size_t pos;                    /* index of the host in img->holders */
    struct avl_node node;          /* in img->tree */
};

struct placement_az {
    char *name;
    struct avl_tree tree;          /* its schedulable hosts */
    size_t n_hosts;                /* all its hosts */
};

struct placement_host {
    char *id;
    char *name;
    struct placement_az *az;
    char arch[ARCH_SIZE];
    char hypervisor_type[HV_SIZE];
    char virt_type[VIRT_SIZE];
    bool up;
    bool enabled;
    bool linked;                   /* in the trees: up and enabled */
    uint32_t cpus;
    uint64_t memory_mb;
    uint64_t disk_gb;
    int64_t vcpus_limit;           /* after ratios and reservation */
    int64_t ram_limit;
    int64_t disk_limit;
    uint64_t used_vcpus;
    uint64_t used_ram;
    uint64_t used_disk;
    uint64_t instances;
    int64_t key;                   /* the RAM weigher's key; fixed while linked */
    int64_t free_vcpus;            /* limit - used; fixed while linked */
    int64_t free_ram;
    int64_t free_disk;
    struct avl_node global_node;
    struct avl_node az_node;
    struct host_image *images;
    size_t n_images;
    size_t slot;                   /* index in sched_placement.hosts */
    uint64_t ignore_stamp;         /* == the pick's stamp: in its ignore list */
    uint64_t group_stamp;          /* == the pick's stamp: holds group members */
    uint32_t group_count;          /* how many, when group_stamp is current */
};

struct sched_placement {
    struct sched_placement_config cfg;
    struct strmap host_by_id;
    struct strmap image_by_id;
    struct strmap az_by_name;
    struct placement_host **hosts; /* every host, in no order */
    size_t n_hosts;
    size_t hosts_cap;
    struct avl_tree global;        /* every schedulable host */
    int64_t ram_norm;              /* largest ram_limit, >= 1 */
    bool ram_norm_dirty;
    uint64_t stamp;                /* one per pick session */
    struct placement_host **group; /* the session's group hosts */
    size_t n_group;
    size_t group_cap;
};

static bool
host_before(const struct placement_host *a, const struct placement_host *b)
{
    if (a->key != b->key)
        return a->key > b->key;
    return strcmp(a->id, b->id) < 0;
}

static int
avl_height(const struct avl_node *n)
{
    return n ? n->height : 0;
}

static void
avl_merge(struct avl_node *n, const struct avl_node *child)
{
    if (!child)
        return;
    if (child->max_vcpus > n->max_vcpus)
        n->max_vcpus = child->max_vcpus;
    if (child->max_ram > n->max_ram)
        n->max_ram = child->max_ram;
    if (child->max_disk > n->max_disk)
        n->max_disk = child->max_disk;
}

/* Recomputes the height and the aggregates of 'n' from its children. */
static void
avl_fix_height(struct avl_node *n)
{
    int l = avl_height(n->left), r = avl_height(n->right);
    n->height = 1 + (l > r ? l : r);
    n->max_vcpus = n->host->free_vcpus;
    n->max_ram = n->host->free_ram;
    n->max_disk = n->host->free_disk;
    avl_merge(n, n->left);
    avl_merge(n, n->right);
}

static void
avl_replace(struct avl_tree *t, struct avl_node *parent, struct avl_node *old,
            struct avl_node *new)
{
    if (!parent)
        t->root = new;
    else if (parent->left == old)
        parent->left = new;
    else
        parent->right = new;
    if (new)
        new->parent = parent;
}

static struct avl_node *
avl_rotate_left(struct avl_tree *t, struct avl_node *x)
{
    struct avl_node *y = x->right;
    x->right = y->left;
    if (y->left)
        y->left->parent = x;
    avl_replace(t, x->parent, x, y);
    y->left = x;
    x->parent = y;
    avl_fix_height(x);
    avl_fix_height(y);
    return y;
}

static struct avl_node *
avl_rotate_right(struct avl_tree *t, struct avl_node *x)
{
    struct avl_node *y = x->left;
    x->left = y->right;
    if (y->right)
        y->right->parent = x;
    avl_replace(t, x->parent, x, y);
    y->right = x;
    x->parent = y;
    avl_fix_height(x);
    avl_fix_height(y);
    return y;
}

/* Restores heights, aggregates and balance from 'n' up. Once past
 * 'must_reach' (NULL: from the start), stops at the first node that
 * neither rotates nor changes: the ones above were computed from its
 * values, so they stand. */
static void
avl_rebalance(struct avl_tree *t, struct avl_node *n, const struct avl_node *must_reach)
{
    while (n) {
        if (n == must_reach)
            must_reach = NULL;
        struct avl_node old = *n;
        avl_fix_height(n);
        int bf = avl_height(n->left) - avl_height(n->right);
        if (bf > 1) {
            if (avl_height(n->left->left) < avl_height(n->left->right))
                avl_rotate_left(t, n->left);
            n = avl_rotate_right(t, n);
        } else if (bf < -1) {
            if (avl_height(n->right->right) < avl_height(n->right->left))
                avl_rotate_right(t, n->right);
            n = avl_rotate_left(t, n);
        } else if (!must_reach && n->height == old.height && n->max_vcpus == old.max_vcpus &&
                   n->max_ram == old.max_ram && n->max_disk == old.max_disk) {
            return;
        }
        n = n->parent;
    }
}

static void
avl_insert(struct avl_tree *t, struct avl_node *n, struct placement_host *h)
{
    struct avl_node *parent = NULL, **link = &t->root;
    while (*link) {
        parent = *link;
        link = host_before(h, parent->host) ? &parent->left : &parent->right;
    }
    *n = (struct avl_node){ .parent = parent, .host = h };
    avl_fix_height(n);
    *link = n;
    t->n++;
    avl_rebalance(t, parent, NULL);
}

static void
avl_remove(struct avl_tree *t, struct avl_node *z)
{
    struct avl_node *start, *moved = NULL;
    if (!z->left || !z->right) {
        start = z->parent;
        avl_replace(t, z->parent, z, z->left ? z->left : z->right);
    } else {
        /* Put the successor 'y' (leftmost of the right subtree, so
         * without a left child) in z's place. */
        struct avl_node *y = z->right;
        while (y->left)
            y = y->left;
        if (y->parent != z) {
            start = y->parent;
            avl_replace(t, y->parent, y, y->right);
            y->right = z->right;
            y->right->parent = y;
        } else {
            start = y;
        }
        avl_replace(t, z->parent, z, y);
        y->left = z->left;
        y->left->parent = y;
        /* What z's ancestors were computed from, for the early stop; y
         * itself must be recomputed whatever happens below it. */
        moved = y;
        y->height = z->height;
        y->max_vcpus = z->max_vcpus;
        y->max_ram = z->max_ram;
        y->max_disk = z->max_disk;
    }
    t->n--;
    avl_rebalance(t, start, moved);
    *z = (struct avl_node){ 0 };
}

static struct avl_node *
avl_first(const struct avl_tree *t)
{
    struct avl_node *n = t->root;
    if (n)
        while (n->left)
            n = n->left;
    return n;
}

static struct avl_node *
avl_next(struct avl_node *n)
{
    if (n->right) {
        n = n->right;
        while (n->left)
            n = n->left;
        return n;
    }
    while (n->parent && n == n->parent->right)
        n = n->parent;
    return n->parent;
}

static bool
subtree_may_fit(const struct avl_node *n, const struct fit *f)
{
    return n->max_vcpus >= f->vcpus && n->max_ram >= f->ram && n->max_disk >= f->disk;
}

static bool
host_has_room(const struct placement_host *h, const struct fit *f)
{
    return h->free_vcpus >= f->vcpus && h->free_ram >= f->ram && h->free_disk >= f->disk;
}

/* The first node of the subtree 'x', in tree order, whose host has room.
 * Subtrees whose aggregates rule it out are skipped whole; the maxima of
 * different resources may come from different hosts, so a subtree that
 * may fit can still hold none (then the search backs out of it). The
 * recursion depth is the tree's height. */
static struct avl_node *
avl_search(struct avl_node *x, const struct fit *f)
{
    while (x && subtree_may_fit(x, f)) {
        struct avl_node *r = avl_search(x->left, f);
        if (r)
            return r;
        if (host_has_room(x->host, f))
            return x;
        x = x->right;
    }
    return NULL;
}

/* Like avl_search, among the nodes whose key is <= 'bound'. */
static struct avl_node *
avl_search_from(struct avl_node *x, int64_t bound, const struct fit *f)
{
    while (x && subtree_may_fit(x, f)) {
        if (x->host->key > bound) {
            x = x->right; /* x and its left subtree come before the bound */
            continue;
        }
        struct avl_node *r = avl_search_from(x->left, bound, f);
        if (r)
            return r;
        if (host_has_room(x->host, f))
            return x;
        return avl_search(x->right, f);
    }
    return NULL;
}

/* The node after 'n' in tree order whose host has room, or NULL. */
static struct avl_node *
avl_next_fit(struct avl_node *n, const struct fit *f)
{
    struct avl_node *r = avl_search(n->right, f);
    if (r)
        return r;
    for (; n->parent; n = n->parent) {
        struct avl_node *p = n->parent;
        if (n != p->left)
            continue;
        if (host_has_room(p->host, f))
            return p;
        r = avl_search(p->right, f);
        if (r)
            return r;
    }
    return NULL;
}

/* ---- Config. */

/* Fills 'cfg' with the defaults documented in placement.h. */
void
sched_placement_config_init(struct sched_placement_config *cfg)
{
    *cfg = (struct sched_placement_config){
        .cpu_allocation_ratio = 4.0,
        .ram_allocation_ratio = 1.0,
        .disk_allocation_ratio = 1.0,
        .reserved_host_memory_mb = 512,
        .ram_weight_multiplier = 1.0,
        .image_weight_multiplier = 0.25,
        .soft_affinity_weight_multiplier = 1.0,
        .soft_anti_affinity_weight_multiplier = 1.0,
    };
}

/* Returns 0 when 'cfg' is usable, -EINVAL otherwise (see placement.h). */
int
sched_placement_config_check(const struct sched_placement_config *cfg)
{
    if (!cfg)
        return -EINVAL;
    const double ratios[] = { cfg->cpu_allocation_ratio, cfg->ram_allocation_ratio,
                              cfg->disk_allocation_ratio };
    for (size_t i = 0; i < ELEMENTSOF(ratios); i++)
        if (!isfinite(ratios[i]) || ratios[i] <= 0 || ratios[i] > 1e6)
            return -EINVAL;
    const double bonuses[] = { cfg->image_weight_multiplier,
                               cfg->soft_affinity_weight_multiplier,
                               cfg->soft_anti_affinity_weight_multiplier };
    for (size_t i = 0; i < ELEMENTSOF(bonuses); i++)
        if (!isfinite(bonuses[i]) || bonuses[i] < 0)
            return -EINVAL;
    if (!isfinite(cfg->ram_weight_multiplier))
        return -EINVAL;
    return 0;
}

static int64_t
scale_floor(uint64_t total, double ratio)
{
    /* The epsilon keeps 3 * 1.1 or 10 * 0.3 from flooring one short;
     * the product is >= 0, so truncation is floor (and needs no libm). */
    double v = (double)total * ratio + 1e-9;
    return v >= 9.0e18 ? INT64_MAX : (int64_t)v;
}

struct limits {
    int64_t vcpus, ram, disk;
};

static struct limits
compute_limits(const struct sched_placement_config *cfg, uint32_t cpus, uint64_t memory_mb,
               uint64_t disk_gb)
{
    return (struct limits){
        .vcpus = scale_floor(cpus, cfg->cpu_allocation_ratio),
        .ram = scale_floor(memory_mb, cfg->ram_allocation_ratio) -
               (int64_t)cfg->reserved_host_memory_mb,
        .disk = scale_floor(disk_gb, cfg->disk_allocation_ratio),
    };
}

static bool
limits_fit(const struct limits *l, uint64_t used_vcpus, uint64_t used_ram, uint64_t used_disk,
           uint32_t vcpus, uint32_t ram_mb, uint32_t disk_gb)
{
    /* Sums of uint32 claims stay far below INT64_MAX. */
    return (int64_t)(used_vcpus + vcpus) <= l->vcpus && (int64_t)(used_ram + ram_mb) <= l->ram &&
           (int64_t)(used_disk + disk_gb) <= l->disk;
}

static const char *const group_policy_table[_SCHED_GROUP_MAX] = {
    [SCHED_GROUP_NONE] = "",
    [SCHED_GROUP_AFFINITY] = "affinity",
    [SCHED_GROUP_ANTI_AFFINITY] = "anti-affinity",
    [SCHED_GROUP_SOFT_AFFINITY] = "soft-affinity",
    [SCHED_GROUP_SOFT_ANTI_AFFINITY] = "soft-anti-affinity",
};

/* Returns the policy's name ("" for NONE), or NULL when out of range. */
const char *
sched_group_policy_to_string(enum sched_group_policy policy)
{
    if ((int)policy < 0 || policy >= _SCHED_GROUP_MAX)
        return NULL;
    return group_policy_table[policy];
}

/* Parses a ServerGroupRecord.policy; NULL or "" is NONE. */
enum sched_group_policy
sched_group_policy_from_string(const char *s)
{
    if (!s)
        return SCHED_GROUP_NONE;
    for (int i = 0; i < _SCHED_GROUP_MAX; i++)
        if (strcmp(group_policy_table[i], s) == 0)
            return (enum sched_group_policy)i;
    return _SCHED_GROUP_INVALID;
}

/* Sets the request's amounts from 'flavor' (see placement.h). */
void
sched_placement_request_set_flavor(struct sched_placement_request *req,
                                   const struct Yun__FlavorRecord *flavor)
{
    uint64_t disk = (uint64_t)flavor->disk_gb + flavor->ephemeral_gb +
                    ((uint64_t)flavor->swap_mb + 1023) / 1024;
    req->vcpus = flavor->vcpus;
    req->ram_mb = flavor->ram_mb;
    req->disk_gb = disk > UINT32_MAX ? UINT32_MAX : (uint32_t)disk;
}

/* ---- Images and the hosts that cache them. */

static struct host_image *
host_find_image(const struct placement_host *h, const struct placement_image *img)
{
    size_t lo = 0, hi = h->n_images;
    uintptr_t want = (uintptr_t)img;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uintptr_t at = (uintptr_t)h->images[mid].img;
        if (at == want)
            return &h->images[mid];
        if (at < want)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static struct placement_image *
image_intern(struct sched_placement *p, const char *id)
{
    struct placement_image *img = strmap_get(&p->image_by_id, id);
    if (img)
        return img;
    if (strmap_reserve(&p->image_by_id) < 0)
        return NULL;
    img = calloc(1, sizeof *img);
    if (!img)
        return NULL;
    img->id = strdup(id);
    if (!img->id) {
        free(img);
        return NULL;
    }
    strmap_put(&p->image_by_id, img->id, img);
    return img;
}

/* Frees 'img' once no host caches it. */
static void
image_maybe_free(struct sched_placement *p, struct placement_image *img)
{
    if (img->n_holders > 0)
        return;
    strmap_del(&p->image_by_id, img->id);
    free(img->holders);
    free(img->id);
    free(img);
}

static int
image_reserve(struct placement_image *img, size_t n)
{
    if (n <= img->holders_cap)
        return 0;
    size_t cap = img->holders_cap ? img->holders_cap * 2 : 4;
    while (cap < n)
        cap *= 2;
    struct placement_host **v = realloc(img->holders, cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    img->holders = v;
    img->holders_cap = cap;
    return 0;
}

/* Adds 'h' (whose entry for 'img' is 'e') to the holders; room must have
 * been reserved. 'h' is not linked while its images change, so a tree
 * built here holds the other holders only; linking adds 'h' later. */
static void
holder_add(struct placement_image *img, struct placement_host *h, struct host_image *e)
{
    e->pos = img->n_holders;
    img->holders[img->n_holders++] = h;
    if (img->popular || img->n_holders <= IMAGE_POPULAR_ON)
        return;
    img->popular = true;
    for (size_t i = 0; i < img->n_holders; i++) {
        struct placement_host *o = img->holders[i];
        if (o->linked)
            avl_insert(&img->tree, &host_find_image(o, img)->node, o);
    }
}

static void
holder_remove(struct placement_image *img, const struct host_image *e)
{
    size_t last = img->n_holders - 1;
    if (e->pos != last) {
        struct placement_host *moved = img->holders[last];
        img->holders[e->pos] = moved;
        host_find_image(moved, img)->pos = e->pos;
    }
    img->n_holders--;
    if (!img->popular || img->n_holders >= IMAGE_POPULAR_OFF)
        return;
    img->popular = false;
    for (size_t i = 0; i < img->n_holders; i++) {
        struct placement_host *o = img->holders[i];
        if (o->linked)
            avl_remove(&img->tree, &host_find_image(o, img)->node);
    }
}

static int
cmp_host_image(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct host_image *)a)->img;
    uintptr_t y = (uintptr_t)((const struct host_image *)b)->img;
    return x < y ? -1 : x > y;
}

static size_t
sort_unique_images(struct host_image *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_host_image);
    size_t k = 1;
    for (size_t i = 1; i < n; i++)
        if (v[i].img != v[k - 1].img)
            v[k++] = v[i];
    return k;
}

/* Builds the sorted entries for the image ids of 'rec', interning new
 * images and reserving room in every holder list, so that committing them
 * (host_set_images) cannot fail. On failure the index is unchanged. */
static int
host_images_prepare(struct sched_placement *p, const Yun__HostRecord *rec,
                    struct host_image **ret, size_t *ret_n)
{
    size_t n = rec->n_cached_images;
    _cleanup_free_ struct host_image *v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t k = 0;
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        const Yun__CachedImage *ci = rec->cached_images[i];
        if (!ci || !ci->image_id || !*ci->image_id)
            continue;
        struct placement_image *img = image_intern(p, ci->image_id);
        if (!img) {
            r = -ENOMEM;
            break;
        }
        v[k++].img = img;
    }
    k = sort_unique_images(v, k);
    for (size_t i = 0; r == 0 && i < k; i++)
        r = image_reserve(v[i].img, v[i].img->n_holders + 1);
    if (r < 0) {
        /* Only the images interned just now have no holder yet. */
        for (size_t i = 0; i < k; i++)
            image_maybe_free(p, v[i].img);
        return r;
    }
    *ret = TAKE_PTR(v);
    *ret_n = k;
    return 0;
}

static bool
images_equal(const struct host_image *a, size_t na, const struct host_image *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].img != b[i].img)
            return false;
    return true;
}

/* Replaces the (unlinked) host's images by 'v' from host_images_prepare,
 * taking it. Cannot fail. */
static void
host_set_images(struct sched_placement *p, struct placement_host *h, struct host_image *v,
                size_t n)
{
    struct host_image *old = h->images;
    size_t n_old = h->n_images;
    size_t i = 0, j = 0;
    while (i < n_old || j < n) {
        uintptr_t a = i < n_old ? (uintptr_t)old[i].img : UINTPTR_MAX;
        uintptr_t b = j < n ? (uintptr_t)v[j].img : UINTPTR_MAX;
        if (i < n_old && (j == n || a < b)) {
            holder_remove(old[i].img, &old[i]);
            i++;
        } else if (j < n && (i == n_old || b < a)) {
            holder_add(v[j].img, h, &v[j]);
            j++;
        } else {
            v[j].pos = old[i].pos;
            i++;
            j++;
        }
    }
    h->images = v;
    h->n_images = n;
    /* Freed only now: the merge above compares these pointers. */
    for (i = 0; i < n_old; i++)
        if (old[i].img->n_holders == 0)
            image_maybe_free(p, old[i].img);
    free(old);
}

/* ---- Hosts and the trees. */

static struct placement_host *
host_lookup(const struct sched_placement *p, const char *id)
{
    return strmap_get(&p->host_by_id, id);
}

static int64_t
host_free_ram(const struct placement_host *h)
{
    return h->ram_limit - (int64_t)h->used_ram;
}

/* Recomputes what the trees sort and aggregate by; 'h' must be unlinked. */
static void
host_rekey(const struct sched_placement *p, struct placement_host *h)
{
    double m = p->cfg.ram_weight_multiplier;
    h->free_vcpus = h->vcpus_limit - (int64_t)h->used_vcpus;
    h->free_ram = host_free_ram(h);
    h->free_disk = h->disk_limit - (int64_t)h->used_disk;
    h->key = m > 0 ? h->free_ram : m < 0 ? -h->free_ram : 0;
}

static void
host_link(struct sched_placement *p, struct placement_host *h)
{
    if (h->linked || !h->up || !h->enabled)
        return;
    avl_insert(&p->global, &h->global_node, h);
    avl_insert(&h->az->tree, &h->az_node, h);
    for (size_t i = 0; i < h->n_images; i++)
        if (h->images[i].img->popular)
            avl_insert(&h->images[i].img->tree, &h->images[i].node, h);
    h->linked = true;
}

static void
host_unlink(struct sched_placement *p, struct placement_host *h)
{
    if (!h->linked)
        return;
    avl_remove(&p->global, &h->global_node);
    avl_remove(&h->az->tree, &h->az_node);
    for (size_t i = 0; i < h->n_images; i++)
        if (h->images[i].node.height)
            avl_remove(&h->images[i].img->tree, &h->images[i].node);
    h->linked = false;
}

/* Keeps ram_norm (the largest RAM limit) up to date as a host's limit
 * goes from 'old' to 'new' (INT64_MIN: no host before/after). */
static void
norm_update(struct sched_placement *p, int64_t old, int64_t new)
{
    if (p->ram_norm_dirty)
        return;
    if (new > p->ram_norm)
        p->ram_norm = new;
    else if (old == p->ram_norm && new < old)
        p->ram_norm_dirty = true;
}

static int64_t
norm_get(struct sched_placement *p)
{
    if (p->ram_norm_dirty) {
        int64_t m = 1;
        for (size_t i = 0; i < p->n_hosts; i++)
            if (p->hosts[i]->ram_limit > m)
                m = p->hosts[i]->ram_limit;
        p->ram_norm = m;
        p->ram_norm_dirty = false;
    }
    return p->ram_norm;
}

static void
host_set_limits(struct sched_placement *p, struct placement_host *h)
{
    int64_t old = h->ram_limit;
    struct limits l = compute_limits(&p->cfg, h->cpus, h->memory_mb, h->disk_gb);
    h->vcpus_limit = l.vcpus;
    h->ram_limit = l.ram;
    h->disk_limit = l.disk;
    norm_update(p, old, l.ram);
    host_rekey(p, h);
}

static struct placement_az *
az_get(struct sched_placement *p, const char *name)
{
    struct placement_az *az = strmap_get(&p->az_by_name, name);
    if (az)
        return az;
    if (strmap_reserve(&p->az_by_name) < 0)
        return NULL;
    az = calloc(1, sizeof *az);
    if (!az)
        return NULL;
    az->name = strdup(name);
    if (!az->name) {
        free(az);
        return NULL;
    }
    strmap_put(&p->az_by_name, az->name, az);
    return az;
}

static void
az_maybe_free(struct sched_placement *p, struct placement_az *az)
{
    if (!az || az->n_hosts > 0)
        return;
    strmap_del(&p->az_by_name, az->name);
    free(az->name);
    free(az);
}

static bool
copy_short(char *dst, size_t size, const char *src)
{
    size_t len = src ? strlen(src) : 0;
    if (len >= size)
        return false;
    memcpy(dst, src ? src : "", len + 1);
    return true;
}

static bool
id_is_valid(const char *id)
{
    return id && *id && strlen(id) <= SCHED_PLACEMENT_ID_MAX;
}

/* Adds or updates a host from 'host' (see placement.h). Every allocation
 * happens before the first change, so a failure leaves the index as it
 * was. */
int
sched_placement_host_update(struct sched_placement *p, const struct Yun__HostRecord *host,
                            const char *az)
{
    if (!p || !host || !id_is_valid(host->id) || host->n_cached_images > HOST_IMAGES_MAX)
        return -EINVAL;
    if (az && *az && strlen(az) > SCHED_PLACEMENT_ID_MAX)
        return -EINVAL;
    for (size_t i = 0; i < host->n_cached_images; i++) {
        const Yun__CachedImage *ci = host->cached_images[i];
        if (ci && ci->image_id && strlen(ci->image_id) > SCHED_PLACEMENT_ID_MAX)
            return -EINVAL;
    }
    const Yun__HostInventory *inv = host->inventory;
    char arch[ARCH_SIZE], hv[HV_SIZE], virt[VIRT_SIZE];
    if (!copy_short(arch, sizeof arch, inv ? inv->arch : NULL) ||
        !copy_short(hv, sizeof hv, inv ? inv->hypervisor_type : NULL) ||
        !copy_short(virt, sizeof virt, inv ? inv->virt_type : NULL))
        return -EINVAL;

    struct placement_host *h = host_lookup(p, host->id);
    bool is_new = !h;
    _cleanup_free_ struct placement_host *fresh = NULL;
    _cleanup_free_ char *id = NULL;
    if (is_new) {
        if (strmap_reserve(&p->host_by_id) < 0)
            return -ENOMEM;
        if (p->n_hosts == p->hosts_cap) {
            size_t cap = p->hosts_cap ? p->hosts_cap * 2 : 64;
            struct placement_host **v = realloc(p->hosts, cap * sizeof *v);
            if (!v)
                return -ENOMEM;
            p->hosts = v;
            p->hosts_cap = cap;
        }
        fresh = calloc(1, sizeof *fresh);
        id = strdup(host->id);
        if (!fresh || !id)
            return -ENOMEM;
        h = fresh;
    }
    _cleanup_free_ char *name = NULL;
    if (!h->name || strcmp(h->name, host->name ? host->name : "") != 0) {
        name = strdup(host->name ? host->name : "");
        if (!name)
            return -ENOMEM;
    }
    const char *az_name = az && *az ? az : h->az ? h->az->name : SCHED_PLACEMENT_AZ_DEFAULT;
    struct placement_az *zone = az_get(p, az_name);
    if (!zone)
        return -ENOMEM;
    struct host_image *images = NULL;
    size_t n_images = 0;
    int r = host_images_prepare(p, host, &images, &n_images);
    if (r < 0) {
        az_maybe_free(p, zone);
        return r;
    }

    /* From here on nothing fails. */
    if (is_new) {
        h->id = TAKE_PTR(id);
        h->ram_limit = INT64_MIN;
        h->slot = p->n_hosts;
        p->hosts[p->n_hosts++] = h;
        strmap_put(&p->host_by_id, h->id, h);
        TAKE_PTR(fresh);
    }
    host_unlink(p, h);
    if (name) {
        free(h->name);
        h->name = TAKE_PTR(name);
    }
    if (h->az != zone) {
        struct placement_az *old = h->az;
        if (old)
            old->n_hosts--;
        zone->n_hosts++;
        h->az = zone;
        az_maybe_free(p, old);
    }
    if (images_equal(h->images, h->n_images, images, n_images))
        free(images);
    else
        host_set_images(p, h, images, n_images);
    memcpy(h->arch, arch, sizeof arch);
    memcpy(h->hypervisor_type, hv, sizeof hv);
    memcpy(h->virt_type, virt, sizeof virt);
    h->up = host->state && strcmp(host->state, "up") == 0;
    h->enabled = host->enabled;
    h->cpus = inv ? inv->cpus : 0;
    h->memory_mb = inv ? inv->memory_mb : 0;
    h->disk_gb = inv ? inv->disk_gb : 0;
    host_set_limits(p, h);
    host_link(p, h);
    return 0;
}

static void
host_free(struct sched_placement *p, struct placement_host *h)
{
    host_unlink(p, h);
    host_set_images(p, h, NULL, 0);
    if (h->az) {
        h->az->n_hosts--;
        az_maybe_free(p, h->az);
    }
    free(h->name);
    free(h->id);
    free(h);
}

/* Removes 'host_id' from the index (see placement.h). */
int
sched_placement_host_remove(struct sched_placement *p, const char *host_id)
{
    if (!p || !host_id)
        return -EINVAL;
    struct placement_host *h = host_lookup(p, host_id);
    if (!h)
        return -ENOENT;
    strmap_del(&p->host_by_id, h->id);
    struct placement_host *last = p->hosts[--p->n_hosts];
    p->hosts[h->slot] = last;
    last->slot = h->slot;
    norm_update(p, h->ram_limit, INT64_MIN);
    host_free(p, h);
    return 0;
}

static void
placement_clear(struct sched_placement *p)
{
    while (p->n_hosts > 0)
        (void)sched_placement_host_remove(p, p->hosts[p->n_hosts - 1]->id);
    p->ram_norm = 1;
    p->ram_norm_dirty = false;
}

/* Creates an empty index (see placement.h). */
int
sched_placement_new(const struct sched_placement_config *cfg, struct sched_placement **ret)
{
    if (!ret)
        return -EINVAL;
    struct sched_placement_config def;
    if (!cfg) {
        sched_placement_config_init(&def);
        cfg = &def;
    }
    if (sched_placement_config_check(cfg) < 0)
        return -EINVAL;
    struct sched_placement *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->cfg = *cfg;
    p->ram_norm = 1;
    *ret = p;
    return 0;
}

/* Frees 'p' and everything in it; NULL ok. Returns NULL. */
struct sched_placement *
sched_placement_free(struct sched_placement *p)
{
    if (!p)
        return NULL;
    placement_clear(p);
    strmap_done(&p->host_by_id);
    strmap_done(&p->image_by_id);
    strmap_done(&p->az_by_name);
    free(p->hosts);
    free(p->group);
    free(p);
    return NULL;
}

/* Replaces the config and re-sorts the index (see placement.h). */
int
sched_placement_set_config(struct sched_placement *p, const struct sched_placement_config *cfg)
{
    if (!p || sched_placement_config_check(cfg) < 0)
        return -EINVAL;
    for (size_t i = 0; i < p->n_hosts; i++)
        host_unlink(p, p->hosts[i]);
    p->cfg = *cfg;
    p->ram_norm_dirty = true;
    for (size_t i = 0; i < p->n_hosts; i++) {
        host_set_limits(p, p->hosts[i]);
        host_link(p, p->hosts[i]);
    }
    return 0;
}

const struct sched_placement_config *
sched_placement_get_config(const struct sched_placement *p)
{
    return &p->cfg;
}

/* Returns the number of hosts in the index, in any state. */
size_t
sched_placement_n_hosts(const struct sched_placement *p)
{
    return p ? p->n_hosts : 0;
}

/* Fills '*ret' with the index's view of 'host_id' (see placement.h). */
int
sched_placement_host_get(const struct sched_placement *p, const char *host_id,
                         struct sched_placement_host_info *ret)
{
    if (!p || !host_id || !ret)
        return -EINVAL;
    const struct placement_host *h = host_lookup(p, host_id);
    if (!h)
        return -ENOENT;
    *ret = (struct sched_placement_host_info){
        .id = h->id,
        .name = h->name,
        .az = h->az->name,
        .up = h->up,
        .enabled = h->enabled,
        .cpus = h->cpus,
        .memory_mb = h->memory_mb,
        .disk_gb = h->disk_gb,
        .vcpus_limit = h->vcpus_limit,
        .ram_limit_mb = h->ram_limit,
        .disk_limit_gb = h->disk_limit,
        .used_vcpus = h->used_vcpus,
        .used_ram_mb = h->used_ram,
        .used_disk_gb = h->used_disk,
        .instances = h->instances,
        .n_cached_images = h->n_images,
    };
    return 0;
}

/* ---- Claims in the index. */

static bool
host_fits(const struct placement_host *h, uint32_t vcpus, uint32_t ram_mb, uint32_t disk_gb)
{
    struct limits l = { h->vcpus_limit, h->ram_limit, h->disk_limit };
    return limits_fit(&l, h->used_vcpus, h->used_ram, h->used_disk, vcpus, ram_mb, disk_gb);
}

static uint64_t
sub_sat(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* Sets the host's usage and re-keys it in its trees: O(log n) per tree. */
static void
host_set_usage(struct sched_placement *p, struct placement_host *h, uint64_t vcpus,
               uint64_t ram_mb, uint64_t disk_gb, uint64_t instances)
{
    host_unlink(p, h);
    h->used_vcpus = vcpus;
    h->used_ram = ram_mb;
    h->used_disk = disk_gb;
    h->instances = instances;
    host_rekey(p, h);
    host_link(p, h);
}

static void
host_add_claim(struct sched_placement *p, struct placement_host *h, uint32_t vcpus,
               uint32_t ram_mb, uint32_t disk_gb)
{
    host_set_usage(p, h, h->used_vcpus + vcpus, h->used_ram + ram_mb, h->used_disk + disk_gb,
                   h->instances + 1);
}

static void
host_drop_claim(struct sched_placement *p, struct placement_host *h, uint32_t vcpus,
                uint32_t ram_mb, uint32_t disk_gb)
{
    host_set_usage(p, h, sub_sat(h->used_vcpus, vcpus), sub_sat(h->used_ram, ram_mb),
                   sub_sat(h->used_disk, disk_gb), sub_sat(h->instances, 1));
}

/* Adds a claim to the index after checking it fits (see placement.h). */
int
sched_placement_claim(struct sched_placement *p, const char *host_id, uint32_t vcpus,
                      uint32_t ram_mb, uint32_t disk_gb)
{
    if (!p || !host_id)
        return -EINVAL;
    struct placement_host *h = host_lookup(p, host_id);
    if (!h)
        return -ENOENT;
    if (!host_fits(h, vcpus, ram_mb, disk_gb))
        return YUN_E_NOVALIDHOST;
    host_add_claim(p, h, vcpus, ram_mb, disk_gb);
    return 0;
}

/* Gives a claim back to the index (see placement.h). */
int
sched_placement_release(struct sched_placement *p, const char *host_id, uint32_t vcpus,
                        uint32_t ram_mb, uint32_t disk_gb)
{
    if (!p || !host_id)
        return -EINVAL;
    struct placement_host *h = host_lookup(p, host_id);
    if (!h)
        return -ENOENT;
    host_drop_claim(p, h, vcpus, ram_mb, disk_gb);
    return 0;
}

/* sched_placement_release with the amounts and host of 'claim'. */
int
sched_placement_release_claim(struct sched_placement *p, const struct Yun__Claim *claim)
{
    if (!claim)
        return -EINVAL;
    return sched_placement_release(p, claim->host_id, claim->vcpus, claim->ram_mb,
                                   claim->disk_gb);
}

/* ---- Picking. */

/* The filters in the order a host is checked against them: a host that
 * fails several is counted under the first in the no-valid-host reason. */
enum filter {
    F_PASS,
    F_IGNORED,
    F_DOWN,
    F_DISABLED,
    F_AZ,
    F_ARCH,
    F_HYPERVISOR,
    F_AFFINITY,
    F_ANTI_AFFINITY,
    F_VCPUS,
    F_RAM,
    F_DISK,
    _F_MAX,
};

/* What one request resolves to for the picks of one place call. */
struct pick_ctx {
    const struct sched_placement_request *req;
    uint64_t stamp;
    bool az_set;                   /* the request names a zone... */
    const struct placement_az *az; /* ...which is this one, or none known */
    const char *arch;              /* NULL = any */
    const char *hypervisor_type;   /* NULL = any */
    enum sched_group_policy policy;
    bool soft;                     /* soft policy: members' hosts weighed */
    size_t n_members;              /* group members, placed ones included */
    uint32_t max_members;          /* most members on one known host */
    struct placement_image *img;   /* the request's image, if cached anywhere */
    double img_bonus;
    double ram_scale;              /* score = ram_scale * key + bonuses */
    struct fit fit;                /* the request's vCPUs, RAM and disk */
    double group_scale;            /* per member on the host */
};

static bool
is_member(const struct pick_ctx *c, const struct placement_host *h)
{
    return h->group_stamp == c->stamp;
}

static enum filter
host_check(const struct pick_ctx *c, const struct placement_host *h)
{
    const struct sched_placement_request *req = c->req;
    if (h->ignore_stamp == c->stamp)
        return F_IGNORED;
    if (!h->up)
        return F_DOWN;
    if (!h->enabled)
        return F_DISABLED;
    if (c->az_set && h->az != c->az)
        return F_AZ;
    if (c->arch && strcasecmp(h->arch, c->arch) != 0)
        return F_ARCH;
    if (c->hypervisor_type && strcasecmp(h->hypervisor_type, c->hypervisor_type) != 0 &&
        strcasecmp(h->virt_type, c->hypervisor_type) != 0)
        return F_HYPERVISOR;
    if (c->policy == SCHED_GROUP_AFFINITY && c->n_members > 0 && !is_member(c, h))
        return F_AFFINITY;
    if (c->policy == SCHED_GROUP_ANTI_AFFINITY && is_member(c, h))
        return F_ANTI_AFFINITY;
    if ((int64_t)(h->used_vcpus + req->vcpus) > h->vcpus_limit)
        return F_VCPUS;
    if ((int64_t)(h->used_ram + req->ram_mb) > h->ram_limit)
        return F_RAM;
    if ((int64_t)(h->used_disk + req->disk_gb) > h->disk_limit)
        return F_DISK;
    return F_PASS;
}

static bool
host_has_image(const struct placement_host *h, const struct placement_image *img)
{
    return img && host_find_image(h, img);
}

/* The weighed score. Every caller computes it with this one expression,
 * in the same order, so that equal inputs give bit-equal scores. */
static double
host_score(const struct pick_ctx *c, const struct placement_host *h)
{
    double s = c->ram_scale * (double)h->key;
    if (c->img_bonus > 0 && host_has_image(h, c->img))
        s += c->img_bonus;
    if (c->soft && is_member(c, h))
        s += c->group_scale * (double)h->group_count;
    return s;
}

struct cand {
    struct placement_host *h;
    double score;
};

/* Keeps the better of 'best' and 'h': higher score, then the RAM key,
 * then the smaller id (the tree's order for hosts without a bonus). */
static void
consider(const struct pick_ctx *c, struct cand *best, struct placement_host *h)
{
    double s = host_score(c, h);
    if (best->h) {
        if (s < best->score)
            return;
        if (s == best->score && !host_before(h, best->h))
            return;
    }
    best->h = h;
    best->score = s;
}

/* Where a walk in tree order starts: at the first host with room (the
 * walk goes on with avl_next_fit, so it never meets a host without).
 * When packing, the hosts with too little RAM all come first: the search
 * starts past them by key, without visiting them. */
static struct avl_node *
walk_start(const struct sched_placement *p, const struct pick_ctx *c, const struct avl_tree *t)
{
    int64_t bound = INT64_MAX;
    if (p->cfg.ram_weight_multiplier < 0)
        bound = -(int64_t)c->req->ram_mb;
    return avl_search_from(t->root, bound, &c->fit);
}

/* Returns the best host for the request, or NULL. Let h1 be the first
 * host in tree order that passes and holds no group member. Any later
 * host without members and without the image scores at most as h1 (lower
 * or equal key, no bonus), and so does any later image holder when h1
 * holds the image too. So what can still beat h1 is: the group's hosts
 * (scored one by one), and when h1 lacks the image, the holders after it,
 * of which the first that passes in tree order is the best. */
static struct placement_host *
pick_one(struct sched_placement *p, struct pick_ctx *c)
{
    struct cand best = { 0 };
    if (c->az_set && !c->az)
        return NULL;
    double m = p->cfg.ram_weight_multiplier;
    c->ram_scale = (m < 0 ? -m : m) / (double)norm_get(p);
    /* As Nova normalises these weighers: the host with the most members
     * gets the whole multiplier, the others their share of it. */
    c->group_scale = 0;
    if (c->max_members > 0 && c->policy == SCHED_GROUP_SOFT_AFFINITY)
        c->group_scale = p->cfg.soft_affinity_weight_multiplier / (double)c->max_members;
    else if (c->max_members > 0 && c->policy == SCHED_GROUP_SOFT_ANTI_AFFINITY)
        c->group_scale = -p->cfg.soft_anti_affinity_weight_multiplier / (double)c->max_members;

    if (c->policy == SCHED_GROUP_AFFINITY && c->n_members > 0) {
        for (size_t i = 0; i < p->n_group; i++)
            if (host_check(c, p->group[i]) == F_PASS)
                consider(c, &best, p->group[i]);
        return best.h;
    }

    const struct avl_tree *t = c->az_set ? &c->az->tree : &p->global;
    struct placement_host *first = NULL;
    for (struct avl_node *n = walk_start(p, c, t); n; n = avl_next_fit(n, &c->fit)) {
        struct placement_host *h = n->host;
        if (c->soft && is_member(c, h))
            continue;
        if (host_check(c, h) != F_PASS)
            continue;
        consider(c, &best, h);
        first = h;
        break;
    }

    if (c->soft)
        for (size_t i = 0; i < p->n_group; i++)
            if (host_check(c, p->group[i]) == F_PASS)
                consider(c, &best, p->group[i]);

    /* Without 'first' the walk saw every host that could pass. */
    if (!first || c->img_bonus <= 0 || host_has_image(first, c->img))
        return best.h;
    struct placement_image *img = c->img;
    if (!img->popular) {
        for (size_t i = 0; i < img->n_holders; i++) {
            struct placement_host *h = img->holders[i];
            if (!(c->soft && is_member(c, h)) && host_check(c, h) == F_PASS)
                consider(c, &best, h);
        }
        return best.h;
    }
    for (struct avl_node *n = walk_start(p, c, &img->tree); n; n = avl_next_fit(n, &c->fit)) {
        struct placement_host *h = n->host;
        /* The same expression as host_score for a holder without members:
         * past this point no holder can reach the best score. */
        if (c->ram_scale * (double)h->key + c->img_bonus < best.score)
            break;
        if (c->soft && is_member(c, h))
            continue;
        if (host_check(c, h) != F_PASS)
            continue;
        consider(c, &best, h);
        break;
    }
    return best.h;
}

static int
request_check(const struct sched_placement_request *req)
{
    if (!req || req->vcpus == 0 || req->ram_mb == 0)
        return -EINVAL;
    if ((int)req->group_policy < 0 || req->group_policy >= _SCHED_GROUP_MAX)
        return -EINVAL;
    if (req->n_group_hosts > REQUEST_LIST_MAX || req->n_ignore_hosts > REQUEST_LIST_MAX)
        return -EINVAL;
    if ((req->n_group_hosts && !req->group_hosts) || (req->n_ignore_hosts && !req->ignore_hosts))
        return -EINVAL;
    for (size_t i = 0; i < req->n_group_hosts; i++)
        if (!req->group_hosts[i])
            return -EINVAL;
    for (size_t i = 0; i < req->n_ignore_hosts; i++)
        if (!req->ignore_hosts[i])
            return -EINVAL;
    return 0;
}

static void
group_add(struct sched_placement *p, struct pick_ctx *c, struct placement_host *h)
{
    c->n_members++;
    if (h->group_stamp == c->stamp) {
        h->group_count++;
    } else {
        h->group_stamp = c->stamp;
        h->group_count = 1;
        p->group[p->n_group++] = h;
    }
    if (h->group_count > c->max_members)
        c->max_members = h->group_count;
}

/* Resolves 'req' for one place call of up to 'max_count' instances: new
 * stamp, ignore marks, the group's hosts, zone and image. O(ignore +
 * members) hash look-ups. */
static int
session_begin(struct sched_placement *p, const struct sched_placement_request *req,
              size_t max_count, struct pick_ctx *c)
{
    int r = request_check(req);
    if (r < 0)
        return r;
    size_t need = req->n_group_hosts + max_count;
    if (need > p->group_cap) {
        struct placement_host **v = realloc(p->group, need * sizeof *v);
        if (!v)
            return -ENOMEM;
        p->group = v;
        p->group_cap = need;
    }
    *c = (struct pick_ctx){
        .req = req,
        .stamp = ++p->stamp,
        .az_set = req->az && *req->az,
        .arch = req->arch && *req->arch ? req->arch : NULL,
        .hypervisor_type =
            req->hypervisor_type && *req->hypervisor_type ? req->hypervisor_type : NULL,
        .policy = req->group_policy,
        .fit = { req->vcpus, req->ram_mb, req->disk_gb },
        .soft = req->group_policy == SCHED_GROUP_SOFT_AFFINITY ||
                req->group_policy == SCHED_GROUP_SOFT_ANTI_AFFINITY,
    };
    if (c->az_set)
        c->az = strmap_get(&p->az_by_name, req->az);
    if (req->image_id && *req->image_id) {
        c->img = strmap_get(&p->image_by_id, req->image_id);
        c->img_bonus = c->img ? p->cfg.image_weight_multiplier : 0;
    }
    for (size_t i = 0; i < req->n_ignore_hosts; i++) {
        struct placement_host *h = host_lookup(p, req->ignore_hosts[i]);
        if (h)
            h->ignore_stamp = c->stamp;
    }
    p->n_group = 0;
    if (c->policy != SCHED_GROUP_NONE)
        for (size_t i = 0; i < req->n_group_hosts; i++) {
            struct placement_host *h = host_lookup(p, req->group_hosts[i]);
            if (h)
                group_add(p, c, h);
            else
                c->n_members++; /* on a host gone from the index */
        }
    return 0;
}

/* An append-only text buffer that truncates at a character boundary. */
struct text {
    char *s;
    size_t size;
    size_t len;
};

static void __attribute__((format(printf, 2, 3)))
text_printf(struct text *t, const char *fmt, ...)
{
    if (!t->s || t->size == 0 || t->len + 1 >= t->size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->s + t->len, t->size - t->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < t->size - t->len) {
        t->len += (size_t)n;
        return;
    }
    /* Truncated: do not leave half of a UTF-8 sequence at the end. */
    t->len = t->size - 1;
    size_t lead = t->len;
    while (lead > 0 && ((unsigned char)t->s[lead - 1] & 0xc0) == 0x80)
        lead--;
    if (lead > 0 && (unsigned char)t->s[lead - 1] >= 0xc0) {
        unsigned char b = (unsigned char)t->s[lead - 1];
        size_t want = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
        if (t->len - (lead - 1) < want)
            t->len = lead - 1;
    }
    t->s[t->len] = '\0';
}

/* Writes why no host passes into 'reason': a full pass over the hosts,
 * O(n), run only when a pick failed. 'placed' and 'min_count' describe a
 * multi-create that placed some instances before failing. */
static void
explain(const struct sched_placement *p, const struct pick_ctx *c, size_t placed,
        size_t min_count, char *reason, size_t reason_size)
{
    if (!reason || reason_size == 0)
        return; /* nobody reads it: skip the O(n) pass */
    struct text t = { .s = reason, .size = reason_size };
    reason[0] = '\0';
    text_printf(&t, "No valid host was found. ");
    if (p->n_hosts == 0) {
        text_printf(&t, "There are no compute hosts.");
        return;
    }
    text_printf(&t, "There are not enough hosts available");
    if (min_count > 1)
        text_printf(&t, ": only %zu of at least %zu instances fit", placed, min_count);
    size_t counts[_F_MAX] = { 0 };
    for (size_t i = 0; i < p->n_hosts; i++)
        counts[host_check(c, p->hosts[i])]++;
    const struct sched_placement_request *req = c->req;
    text_printf(&t, ". %zu host%s: ", p->n_hosts, p->n_hosts == 1 ? "" : "s");
    bool sep = false;
    for (int f = F_IGNORED; f < _F_MAX; f++) {
        if (!counts[f])
            continue;
        text_printf(&t, "%s%zu ", sep ? ", " : "", counts[f]);
        sep = true;
        switch ((enum filter)f) {
        case F_IGNORED:
            text_printf(&t, "already tried");
            break;
        case F_DOWN:
            text_printf(&t, "down");
            break;
        case F_DISABLED:
            text_printf(&t, "disabled");
            break;
        case F_AZ:
            text_printf(&t, "outside availability zone '%s'", req->az);
            break;
        case F_ARCH:
            text_printf(&t, "not of architecture '%s'", c->arch);
            break;
        case F_HYPERVISOR:
            text_printf(&t, "not of hypervisor type '%s'", c->hypervisor_type);
            break;
        case F_AFFINITY:
            text_printf(&t, "not the host of the server group (affinity)");
            break;
        case F_ANTI_AFFINITY:
            text_printf(&t, "already holding a member of the server group (anti-affinity)");
            break;
        case F_VCPUS:
            text_printf(&t, "without enough vCPUs");
            break;
        case F_RAM:
            text_printf(&t, "without enough RAM");
            break;
        case F_DISK:
            text_printf(&t, "without enough disk");
            break;
        case F_PASS:
        case _F_MAX:
            break;
        }
    }
    if (counts[F_PASS])
        text_printf(&t, "%s%zu passing", sep ? ", " : "", counts[F_PASS]);
    text_printf(&t, ".");
}

/* Picks a host for one instance without claiming (see placement.h). */
int
sched_placement_pick(struct sched_placement *p, const struct sched_placement_request *req,
                     const char **ret_host_id, char *reason, size_t reason_size)
{
    if (!p || !ret_host_id)
        return -EINVAL;
    struct pick_ctx c;
    int r = session_begin(p, req, 1, &c);
    if (r < 0)
        return r;
    struct placement_host *h = pick_one(p, &c);
    if (!h) {
        explain(p, &c, 0, 1, reason, reason_size);
        return YUN_E_NOVALIDHOST;
    }
    *ret_host_id = h->id;
    return 0;
}

/* Gives back the index claims of 'allocs' (see placement.h). */
void
sched_placement_undo(struct sched_placement *p, const struct sched_placement_alloc *allocs,
                     size_t n)
{
    if (!p || !allocs)
        return;
    for (size_t i = 0; i < n; i++)
        (void)sched_placement_release(p, allocs[i].host_id, allocs[i].vcpus, allocs[i].ram_mb,
                                      allocs[i].disk_gb);
}

static void
sync_host(struct sched_placement *p, struct placement_host *h, const Yun__HostUsageSum *u)
{
    host_set_usage(p, h, u ? u->vcpus : 0, u ? u->ram_mb : 0, u ? u->disk_gb : 0,
                   u ? u->instances : 0);
}

static int load_usage(struct yun_txn *txn, const char *host_id, Yun__HostUsageSum **ret);

static void
usage_freep(Yun__HostUsageSum **u)
{
    if (*u)
        yun__host_usage_sum__free_unpacked(*u, NULL);
}

/* Places min_count..max_count instances (see placement.h). */
int
sched_placement_place(struct sched_placement *p, struct yun_txn *txn,
                      const struct sched_placement_request *req,
                      const char *const *instance_ids, size_t min_count, size_t max_count,
                      struct sched_placement_alloc *ret_allocs, size_t *ret_count, char *reason,
                      size_t reason_size)
{
    if (!p || !ret_allocs || !ret_count || min_count < 1 || min_count > max_count ||
        max_count > SCHED_PLACEMENT_MAX_COUNT)
        return -EINVAL;
    if (txn) {
        if (!instance_ids)
            return -EINVAL;
        for (size_t i = 0; i < max_count; i++)
            if (!id_is_valid(instance_ids[i]))
                return -EINVAL;
    }
    struct pick_ctx c;
    int r = session_begin(p, req, max_count, &c);
    if (r < 0)
        return r;
    _cleanup_free_ struct sched_placement_alloc *allocs = calloc(max_count, sizeof *allocs);
    if (!allocs)
        return -ENOMEM;

    size_t count = 0;
    uint64_t now = txn ? yun_wall_us() : 0;
    while (count < max_count) {
        struct placement_host *h = pick_one(p, &c);
        if (!h)
            break;
        if (txn) {
            Yun__Claim cl = YUN__CLAIM__INIT;
            cl.instance_id = (char *)instance_ids[count];
            cl.host_id = h->id;
            cl.vcpus = req->vcpus;
            cl.ram_mb = req->ram_mb;
            cl.disk_gb = req->disk_gb;
            cl.created_us = now;
            r = sched_placement_claim_txn(txn, &p->cfg, &cl);
            if (r == YUN_E_NOVALIDHOST) {
                /* Another writer took the room the index saw: believe the
                 * store, and do not try this host again for this request
                 * (its instances all have the same size). */
                _cleanup_(usage_freep) Yun__HostUsageSum *u = NULL;
                r = load_usage(txn, h->id, &u);
                if (r < 0)
                    goto fail;
                sync_host(p, h, u);
                h->ignore_stamp = c.stamp;
                continue;
            }
            if (r < 0)
                goto fail;
        }
        host_add_claim(p, h, req->vcpus, req->ram_mb, req->disk_gb);
        struct sched_placement_alloc *a = &allocs[count++];
        memcpy(a->host_id, h->id, strlen(h->id) + 1);
        a->vcpus = req->vcpus;
        a->ram_mb = req->ram_mb;
        a->disk_gb = req->disk_gb;
        if (c.policy != SCHED_GROUP_NONE)
            group_add(p, &c, h);
    }
    if (count < min_count) {
        explain(p, &c, count, min_count, reason, reason_size);
        r = YUN_E_NOVALIDHOST;
        goto fail;
    }
    memcpy(ret_allocs, allocs, count * sizeof *allocs);
    *ret_count = count;
    return 0;

fail:
    sched_placement_undo(p, allocs, count);
    return r;
}

/* ---- The durable part. */

static int
load_usage(struct yun_txn *txn, const char *host_id, Yun__HostUsageSum **ret)
{
    ProtobufCMessage *m = NULL;
    int r = yun_txn_get_msg(txn, DB_USAGE, host_id, &yun__host_usage_sum__descriptor, &m);
    if (r == -ENOENT) {
        *ret = NULL;
        return 0;
    }
    if (r < 0)
        return r;
    *ret = (Yun__HostUsageSum *)m;
    return 0;
}

static int
store_usage(struct yun_txn *txn, const char *host_id, const Yun__HostUsageSum *u)
{
    if (u->vcpus == 0 && u->ram_mb == 0 && u->disk_gb == 0 && u->instances == 0) {
        int r = yun_txn_del(txn, DB_USAGE, host_id, strlen(host_id));
        return r == -ENOENT ? 0 : r;
    }
    return yun_txn_put_msg(txn, DB_USAGE, host_id, &u->base);
}

static void
host_record_freep(Yun__HostRecord **h)
{
    if (*h)
        yun__host_record__free_unpacked(*h, NULL);
}

static void
claim_freep(Yun__Claim **c)
{
    if (*c)
        yun__claim__free_unpacked(*c, NULL);
}

/* Writes a claim durably after re-checking the stored usage (see
 * placement.h). */
int
sched_placement_claim_txn(struct yun_txn *txn, const struct sched_placement_config *cfg,
                          const struct Yun__Claim *claim)
{
    if (!txn || sched_placement_config_check(cfg) < 0 || !claim ||
        !id_is_valid(claim->instance_id) || !id_is_valid(claim->host_id))
        return -EINVAL;

    int r = yun_txn_get(txn, DB_CLAIMS, claim->instance_id, strlen(claim->instance_id), NULL,
                        NULL);
    if (r == 0)
        return -EEXIST;
    if (r != -ENOENT)
        return r;

    _cleanup_(host_record_freep) Yun__HostRecord *host = NULL;
    r = yun_txn_get_msg(txn, DB_HOSTS, claim->host_id, &yun__host_record__descriptor,
                        (ProtobufCMessage **)&host);
    if (r == -ENOENT)
        return YUN_E_NOHOST;
    if (r < 0)
        return r;
    _cleanup_(usage_freep) Yun__HostUsageSum *stored = NULL;
    r = load_usage(txn, claim->host_id, &stored);
    if (r < 0)
        return r;
    Yun__HostUsageSum u = YUN__HOST_USAGE_SUM__INIT;
    if (stored) {
        u.vcpus = stored->vcpus;
        u.ram_mb = stored->ram_mb;
        u.disk_gb = stored->disk_gb;
        u.instances = stored->instances;
    }

    const Yun__HostInventory *inv = host->inventory;
    struct limits l = compute_limits(cfg, inv ? inv->cpus : 0, inv ? inv->memory_mb : 0,
                                     inv ? inv->disk_gb : 0);
    if (!limits_fit(&l, u.vcpus, u.ram_mb, u.disk_gb, claim->vcpus, claim->ram_mb,
                    claim->disk_gb))
        return YUN_E_NOVALIDHOST;

    Yun__Claim c = *claim;
    if (!c.created_us)
        c.created_us = yun_wall_us();
    r = yun_txn_put_msg(txn, DB_CLAIMS, c.instance_id, &c.base);
    if (r < 0)
        return r;
    u.vcpus += claim->vcpus;
    u.ram_mb += claim->ram_mb;
    u.disk_gb += claim->disk_gb;
    u.instances++;
    return store_usage(txn, claim->host_id, &u);
}

/* Deletes a claim durably and subtracts it from its host's sums (see
 * placement.h). */
int
sched_placement_release_txn(struct yun_txn *txn, const char *instance_id,
                            struct Yun__Claim **ret_claim)
{
    if (!txn || !id_is_valid(instance_id))
        return -EINVAL;
    _cleanup_(claim_freep) Yun__Claim *claim = NULL;
    int r = yun_txn_get_msg(txn, DB_CLAIMS, instance_id, &yun__claim__descriptor,
                            (ProtobufCMessage **)&claim);
    if (r < 0)
        return r;
    if (!id_is_valid(claim->host_id))
        return -EBADMSG;
    _cleanup_(usage_freep) Yun__HostUsageSum *stored = NULL;
    r = load_usage(txn, claim->host_id, &stored);
    if (r < 0)
        return r;
    Yun__HostUsageSum u = YUN__HOST_USAGE_SUM__INIT;
    if (stored) {
        u.vcpus = sub_sat(stored->vcpus, claim->vcpus);
        u.ram_mb = sub_sat(stored->ram_mb, claim->ram_mb);
        u.disk_gb = sub_sat(stored->disk_gb, claim->disk_gb);
        u.instances = sub_sat(stored->instances, 1);
    }
    r = store_usage(txn, claim->host_id, &u);
    if (r < 0)
        return r;
    r = yun_txn_del(txn, DB_CLAIMS, instance_id, strlen(instance_id));
    if (r < 0)
        return r;
    if (ret_claim)
        *ret_claim = TAKE_PTR(claim);
    return 0;
}

/* Reloads one host's usage from the store (see placement.h). */
int
sched_placement_sync_host_txn(struct sched_placement *p, struct yun_txn *txn,
                              const char *host_id)
{
    if (!p || !txn || !host_id)
        return -EINVAL;
    struct placement_host *h = host_lookup(p, host_id);
    if (!h)
        return -ENOENT;
    _cleanup_(usage_freep) Yun__HostUsageSum *u = NULL;
    int r = load_usage(txn, host_id, &u);
    if (r < 0)
        return r;
    sync_host(p, h, u);
    return 0;
}

struct load_ctx {
    struct sched_placement *p;
    sched_placement_az_fn az_fn;
    void *data;
    size_t orphans;
};

static int
load_host_cb(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct load_ctx *l = data;
    _cleanup_(host_record_freep) Yun__HostRecord *h =
        yun__host_record__unpack(NULL, val_size, val);
    if (!h)
        return -EBADMSG;
    return sched_placement_host_update(l->p, h, l->az_fn ? l->az_fn(h, l->data) : NULL);
}

static int
load_claim_cb(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct load_ctx *l = data;
    _cleanup_(claim_freep) Yun__Claim *c = yun__claim__unpack(NULL, val_size, val);
    if (!c)
        return -EBADMSG;
    struct placement_host *h = host_lookup(l->p, c->host_id);
    if (!h) {
        l->orphans++;
        return 0;
    }
    /* Not checked against the limits: the claim exists, whatever the
     * ratios say today. */
    host_add_claim(l->p, h, c->vcpus, c->ram_mb, c->disk_gb);
    return 0;
}

/* Rebuilds the index from "hosts" and "claims" (see placement.h). */
int
sched_placement_load(struct sched_placement *p, struct yun_txn *txn, sched_placement_az_fn az_fn,
                     void *data)
{
    if (!p || !txn)
        return -EINVAL;
    placement_clear(p);
    struct load_ctx l = { .p = p, .az_fn = az_fn, .data = data };
    int r = yun_txn_iterate(txn, DB_HOSTS, NULL, 0, load_host_cb, &l);
    if (r >= 0)
        r = yun_txn_iterate(txn, DB_CLAIMS, NULL, 0, load_claim_cb, &l);
    if (r < 0) {
        placement_clear(p);
        return r;
    }
    if (l.orphans > 0)
        log_warn("%zu claims name hosts that have no record, ignoring them", l.orphans);
    return 0;
}

/* One host's sums while checking "host_usage" against "claims". */
struct usage_acc {
    char *host_id;
    Yun__HostUsageSum sum;         /* from the claims */
    bool seen;                     /* a stored record matched */
    bool differs;
};

struct check_ctx {
    struct strmap by_host;
    struct usage_acc **accs;
    size_t n;
    size_t cap;
};

static void
check_ctx_done(struct check_ctx *k)
{
    for (size_t i = 0; i < k->n; i++) {
        free(k->accs[i]->host_id);
        free(k->accs[i]);
    }
    free(k->accs);
    strmap_done(&k->by_host);
}

static struct usage_acc *
check_acc(struct check_ctx *k, const char *host_id)
{
    struct usage_acc *a = strmap_get(&k->by_host, host_id);
    if (a)
        return a;
    if (strmap_reserve(&k->by_host) < 0)
        return NULL;
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        struct usage_acc **v = realloc(k->accs, cap * sizeof *v);
        if (!v)
            return NULL;
        k->accs = v;
        k->cap = cap;
    }
    a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->host_id = strdup(host_id);
    if (!a->host_id) {
        free(a);
        return NULL;
    }
    yun__host_usage_sum__init(&a->sum);
    k->accs[k->n++] = a;
    strmap_put(&k->by_host, a->host_id, a);
    return a;
}

static int
check_claim_cb(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    _cleanup_(claim_freep) Yun__Claim *c = yun__claim__unpack(NULL, val_size, val);
    if (!c || !id_is_valid(c->host_id))
        return -EBADMSG;
    struct usage_acc *a = check_acc(data, c->host_id);
    if (!a)
        return -ENOMEM;
    a->sum.vcpus += c->vcpus;
    a->sum.ram_mb += c->ram_mb;
    a->sum.disk_gb += c->disk_gb;
    a->sum.instances++;
    return 0;
}

static int
check_usage_cb(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    if (key_size == 0 || key_size > SCHED_PLACEMENT_ID_MAX)
        return -EBADMSG;
    char id[SCHED_PLACEMENT_ID_MAX + 1];
    memcpy(id, key, key_size);
    id[key_size] = '\0';
    _cleanup_(usage_freep) Yun__HostUsageSum *u =
        yun__host_usage_sum__unpack(NULL, val_size, val);
    if (!u)
        return -EBADMSG;
    struct usage_acc *a = check_acc(data, id);
    if (!a)
        return -ENOMEM;
    a->seen = true;
    a->differs = u->vcpus != a->sum.vcpus || u->ram_mb != a->sum.ram_mb ||
                 u->disk_gb != a->sum.disk_gb || u->instances != a->sum.instances;
    return 0;
}

/* Compares (and repairs) "host_usage" against "claims" (see
 * placement.h). Memory: one small record per host with claims. */
int
sched_placement_check_usage_txn(struct yun_txn *txn, bool repair, size_t *ret_mismatches)
{
    if (!txn)
        return -EINVAL;
    _cleanup_(check_ctx_done) struct check_ctx k = { 0 };
    int r = yun_txn_iterate(txn, DB_CLAIMS, NULL, 0, check_claim_cb, &k);
    if (r < 0)
        return r;
    r = yun_txn_iterate(txn, DB_USAGE, NULL, 0, check_usage_cb, &k);
    if (r < 0)
        return r;
    size_t mismatches = 0;
    for (size_t i = 0; i < k.n; i++) {
        struct usage_acc *a = k.accs[i];
        if (!a->seen)
            a->differs = a->sum.instances > 0; /* claims without a record */
        if (!a->differs)
            continue;
        mismatches++;
        if (repair) {
            r = store_usage(txn, a->host_id, &a->sum);
            if (r < 0)
                return r;
        }
    }
    if (ret_mismatches)
        *ret_mismatches = mismatches;
    return 0;
}

/* ---- Introspection. */

static int
cmp_host_id(const void *a, const void *b)
{
    return strcmp((*(struct placement_host *const *)a)->id,
                  (*(struct placement_host *const *)b)->id);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void
fclosep(FILE **f)
{
    if (*f)
        (void)fclose(*f);
}

/* Dumps the index as text, one host per line sorted by id (see
 * placement.h). */
int
sched_placement_dump(const struct sched_placement *p, char **ret_text)
{
    if (!p || !ret_text)
        return -EINVAL;
    _cleanup_free_ struct placement_host **v = calloc(p->n_hosts ? p->n_hosts : 1, sizeof *v);
    _cleanup_free_ const char **ids = calloc(HOST_IMAGES_MAX, sizeof *ids);
    if (!v || !ids)
        return -ENOMEM;
    memcpy(v, p->hosts, p->n_hosts * sizeof *v);
    qsort(v, p->n_hosts, sizeof *v, cmp_host_id);

    _cleanup_free_ char *text = NULL;
    size_t size = 0;
    _cleanup_(fclosep) FILE *f = open_memstream(&text, &size);
    if (!f)
        return -ENOMEM;
    for (size_t i = 0; i < p->n_hosts; i++) {
        const struct placement_host *h = v[i];
        fprintf(f,
                "%s name=%s az=%s state=%s enabled=%s arch=%s hypervisor=%s/%s "
                "vcpus=%" PRIu64 "/%" PRId64 " ram_mb=%" PRIu64 "/%" PRId64
                " disk_gb=%" PRIu64 "/%" PRId64 " instances=%" PRIu64 " images=",
                h->id, h->name, h->az->name, h->up ? "up" : "down", h->enabled ? "yes" : "no",
                h->arch, h->hypervisor_type, h->virt_type, h->used_vcpus, h->vcpus_limit,
                h->used_ram, h->ram_limit, h->used_disk, h->disk_limit, h->instances);
        for (size_t j = 0; j < h->n_images; j++)
            ids[j] = h->images[j].img->id;
        qsort(ids, h->n_images, sizeof *ids, cmp_str);
        for (size_t j = 0; j < h->n_images; j++)
            fprintf(f, "%s%s", j ? "," : "", ids[j]);
        fputc('\n', f);
    }
    if (fflush(f) != 0 || ferror(f))
        return -ENOMEM;
    (void)fclose(TAKE_PTR(f));
    *ret_text = TAKE_PTR(text);
    return 0;
}

/* Checks one tree: links, heights, balance and order. Returns its size
 * or -1. */
static long
verify_subtree(const struct avl_node *n, const struct avl_node *parent, int *ret_height)
{
    if (!n) {
        *ret_height = 0;
        return 0;
    }
    if (n->parent != parent || !n->host)
        return -1;
    if (n->left && !host_before(n->left->host, n->host))
        return -1;
    if (n->right && !host_before(n->host, n->right->host))
        return -1;
    int hl, hr;
    long l = verify_subtree(n->left, n, &hl);
    long r = verify_subtree(n->right, n, &hr);
    if (l < 0 || r < 0 || hl - hr > 1 || hr - hl > 1)
        return -1;
    *ret_height = 1 + (hl > hr ? hl : hr);
    if (n->height != *ret_height)
        return -1;
    struct avl_node want = *n;
    avl_fix_height(&want);
    if (want.max_vcpus != n->max_vcpus || want.max_ram != n->max_ram ||
        want.max_disk != n->max_disk)
        return -1;
    return l + r + 1;
}

static bool
verify_tree(const struct avl_tree *t)
{
    int height;
    long n = verify_subtree(t->root, NULL, &height);
    if (n < 0 || (size_t)n != t->n)
        return false;
    /* Local checks miss a node ordered wrongly against a grandparent:
     * the in-order walk does not. */
    const struct avl_node *prev = NULL;
    for (struct avl_node *x = avl_first(t); x; x = avl_next(x)) {
        if (prev && !host_before(prev->host, x->host))
            return false;
        prev = x;
    }
    return true;
}

/* Checks the index's invariants (see placement.h). */
int
sched_placement_verify(const struct sched_placement *p)
{
    if (!p)
        return -EINVAL;
    if (p->host_by_id.n != p->n_hosts || !verify_tree(&p->global))
        return -EUCLEAN;
    size_t linked = 0;
    int64_t norm = 1;
    for (size_t i = 0; i < p->n_hosts; i++) {
        const struct placement_host *h = p->hosts[i];
        if (h->slot != i || host_lookup(p, h->id) != h || !h->az)
            return -EUCLEAN;
        if (h->linked != (h->up && h->enabled))
            return -EUCLEAN;
        if ((h->global_node.height != 0) != h->linked || (h->az_node.height != 0) != h->linked)
            return -EUCLEAN;
        double m = p->cfg.ram_weight_multiplier;
        int64_t key = m > 0 ? host_free_ram(h) : m < 0 ? -host_free_ram(h) : 0;
        if (h->key != key || h->free_ram != host_free_ram(h) ||
            h->free_vcpus != h->vcpus_limit - (int64_t)h->used_vcpus ||
            h->free_disk != h->disk_limit - (int64_t)h->used_disk)
            return -EUCLEAN;
        struct limits l = compute_limits(&p->cfg, h->cpus, h->memory_mb, h->disk_gb);
        if (l.vcpus != h->vcpus_limit || l.ram != h->ram_limit || l.disk != h->disk_limit)
            return -EUCLEAN;
        if (h->ram_limit > norm)
            norm = h->ram_limit;
        linked += h->linked;
        for (size_t j = 0; j < h->n_images; j++) {
            const struct host_image *e = &h->images[j];
            if (j > 0 && (uintptr_t)h->images[j - 1].img >= (uintptr_t)e->img)
                return -EUCLEAN;
            if (e->pos >= e->img->n_holders || e->img->holders[e->pos] != h)
                return -EUCLEAN;
            if ((e->node.height != 0) != (e->img->popular && h->linked))
                return -EUCLEAN;
        }
    }
    if (linked != p->global.n)
        return -EUCLEAN;
    if (!p->ram_norm_dirty && p->ram_norm != norm)
        return -EUCLEAN;
    for (size_t i = 0; i <= p->az_by_name.mask && p->az_by_name.slots; i++) {
        const struct placement_az *az = p->az_by_name.slots[i].val;
        if (!az)
            continue;
        if (az->n_hosts == 0 || !verify_tree(&az->tree))
            return -EUCLEAN;
        for (struct avl_node *x = avl_first(&az->tree); x; x = avl_next(x))
            if (x->host->az != az)
                return -EUCLEAN;
    }
    for (size_t i = 0; i <= p->image_by_id.mask && p->image_by_id.slots; i++) {
        const struct placement_image *img = p->image_by_id.slots[i].val;
        if (!img)
            continue;
        if (img->n_holders == 0 || !verify_tree(&img->tree))
            return -EUCLEAN;
        if (img->popular ? img->n_holders < IMAGE_POPULAR_OFF
                         : img->n_holders > IMAGE_POPULAR_ON || img->tree.n > 0)
            return -EUCLEAN;
        size_t linked_holders = 0;
        for (size_t j = 0; j < img->n_holders; j++) {
            if (!host_find_image(img->holders[j], img))
                return -EUCLEAN;
            linked_holders += img->holders[j]->linked;
        }
        if (img->popular && img->tree.n != linked_holders)
            return -EUCLEAN;
    }
    return 0;
}
