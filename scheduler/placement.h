/* SPDX-License-Identifier: Apache-2.0
 * placement.h: the placement engine (issue 4). Chooses the compute host of
 * each new instance and accounts for what it takes there.
 *
 * Two halves:
 *   - An in-memory index of the hosts (struct sched_placement), built from
 *     the HostRecords and the current claims and kept in step
 *     incrementally (host updated/removed, claim added/released). The
 *     scheduler is single-threaded: the index is authoritative in memory,
 *     LMDB is the durable record. Picks read only the index.
 *   - The durable part, in a write transaction the caller owns: a Claim in
 *     "claims" (key: instance id) and the host's sums in "host_usage" (key:
 *     host id, a HostUsageSum), re-checked against the stored sums inside
 *     the transaction, so that two concurrent creates (even from two
 *     processes) can never both take the last slot.
 * The caller's store must have the databases "hosts", "claims" and
 * "host_usage". docs/placement.md gives the design and its complexity.
 *
 * Neighbours: host.c keeps the HostRecords (feed each change to
 * sched_placement_host_update); the server handlers call
 * sched_placement_place in the transaction that creates the instances and
 * sched_placement_release_txn in the one that deletes them. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sched_placement;
struct yun_txn;
struct Yun__HostRecord;
struct Yun__FlavorRecord;
struct Yun__Claim;

#define SCHED_PLACEMENT_AZ_DEFAULT "default"
/* Longest host id, image id or zone name the index accepts (bytes). */
#define SCHED_PLACEMENT_ID_MAX 255
/* Instances one sched_placement_place call may place. */
#define SCHED_PLACEMENT_MAX_COUNT 1024
/* A buffer of this size holds any no-valid-host reason untruncated for
 * the usual requests; longer ones are cut at a character boundary. */
#define SCHED_PLACEMENT_REASON_SIZE 1024

/* Allocation ratios, reservation and weigher multipliers: the scheduler's
 * [placement] config section carries them. Weights use one unit: a host's
 * RAM weight is ram_weight_multiplier * free_ram / R, where R is the
 * largest RAM capacity of any host in the index, so every weigher's
 * multiplier is measured against the RAM range as in Nova. */
struct sched_placement_config {
    double cpu_allocation_ratio;      /* 4.0: vCPUs per host CPU */
    double ram_allocation_ratio;      /* 1.0 */
    double disk_allocation_ratio;     /* 1.0 */
    uint32_t reserved_host_memory_mb; /* 512: RAM kept for the host itself */
    double ram_weight_multiplier;     /* 1.0: > 0 spreads (most free RAM
                                       * first), < 0 packs (least free RAM
                                       * that fits), 0 ignores RAM */
    double image_weight_multiplier;   /* 0.25: bonus of a host that
                                       * already caches the image; >= 0 */
    double soft_affinity_weight_multiplier;      /* 1.0: >= 0 */
    double soft_anti_affinity_weight_multiplier; /* 1.0: >= 0 */
};

/* Fills 'cfg' with the defaults above. */
void sched_placement_config_init(struct sched_placement_config *cfg);
/* 0 when 'cfg' is usable: ratios finite and > 0, multipliers finite, the
 * image and soft multipliers >= 0. -EINVAL otherwise. */
int sched_placement_config_check(const struct sched_placement_config *cfg);

enum sched_group_policy {
    SCHED_GROUP_NONE,
    SCHED_GROUP_AFFINITY,           /* all members on one host */
    SCHED_GROUP_ANTI_AFFINITY,      /* never two members on one host */
    SCHED_GROUP_SOFT_AFFINITY,      /* weigher: prefer the members' hosts */
    SCHED_GROUP_SOFT_ANTI_AFFINITY, /* weigher: avoid the members' hosts */
    _SCHED_GROUP_MAX,
    _SCHED_GROUP_INVALID = -EINVAL,
};
/* "" for NONE, else ServerGroupRecord.policy's spelling ("affinity",
 * "anti-affinity", "soft-affinity", "soft-anti-affinity"). */
const char *sched_group_policy_to_string(enum sched_group_policy policy);
/* The reverse; NULL or "" is NONE; _SCHED_GROUP_INVALID when unknown. */
enum sched_group_policy sched_group_policy_from_string(const char *s);

/* What one instance needs and where it may go. Strings are borrowed for
 * the call. */
struct sched_placement_request {
    uint32_t vcpus;                 /* >= 1 */
    uint32_t ram_mb;                /* >= 1 */
    uint32_t disk_gb;               /* root + ephemeral + swap; may be 0 */
    const char *az;                 /* availability zone; NULL or "" = any */
    const char *image_id;           /* for the image-cache weigher; NULL = none */
    const char *arch;               /* image property; NULL or "" = any */
    const char *hypervisor_type;    /* image property, matched against the
                                     * host's hypervisor_type or virt_type
                                     * (case-insensitive); NULL or "" = any */
    enum sched_group_policy group_policy;
    const char *const *group_hosts; /* the host id of each existing member
                                     * (a host twice = two members there) */
    size_t n_group_hosts;
    const char *const *ignore_hosts; /* hosts already tried (failed spawns) */
    size_t n_ignore_hosts;
};

/* Sets 'req''s vcpus, ram_mb and disk_gb from 'flavor': disk is the root
 * disk plus the ephemeral disk plus the swap rounded up to whole GiB. */
void sched_placement_request_set_flavor(struct sched_placement_request *req,
                                        const struct Yun__FlavorRecord *flavor);

/* One placed instance: where it went and what it took. */
struct sched_placement_alloc {
    char host_id[SCHED_PLACEMENT_ID_MAX + 1];
    uint32_t vcpus;
    uint32_t ram_mb;
    uint32_t disk_gb;
};

/* A read-only view of one host in the index. Strings are borrowed until
 * the index next changes. Limits are after the allocation ratios and the
 * reservation, so they may be below zero; free = limit - used. */
struct sched_placement_host_info {
    const char *id;
    const char *name;
    const char *az;
    bool up;
    bool enabled;
    uint32_t cpus;
    uint64_t memory_mb;
    uint64_t disk_gb;
    int64_t vcpus_limit;
    int64_t ram_limit_mb;
    int64_t disk_limit_gb;
    uint64_t used_vcpus;
    uint64_t used_ram_mb;
    uint64_t used_disk_gb;
    uint64_t instances;
    size_t n_cached_images;
};

/* Creates an empty index using a copy of 'cfg' (NULL = defaults).
 * Returns 0 and '*ret' (free with sched_placement_free), -EINVAL for a bad
 * 'cfg', -ENOMEM. */
int sched_placement_new(const struct sched_placement_config *cfg, struct sched_placement **ret);
/* Frees 'p'; NULL ok. Returns NULL. */
struct sched_placement *sched_placement_free(struct sched_placement *p);
/* Replaces the config (for a reload): every host's limits are recomputed
 * and the index re-sorted, O(n log n). -EINVAL for a bad 'cfg', leaving
 * the old one. */
int sched_placement_set_config(struct sched_placement *p, const struct sched_placement_config *cfg);
const struct sched_placement_config *sched_placement_get_config(const struct sched_placement *p);

/* Adds 'host' to the index or updates it from a newer record: inventory,
 * state ("up" or not), enabled and the cached images (which replace the
 * old set). The host's usage is kept: it comes from claims only. 'az' is
 * its availability zone; NULL keeps the current one (a new host gets
 * SCHED_PLACEMENT_AZ_DEFAULT). The record is not kept. Returns 0;
 * -EINVAL for a record without id, with an id, zone or image id longer
 * than SCHED_PLACEMENT_ID_MAX, more than 4096 images, or an arch,
 * hypervisor_type or virt_type longer than host.c accepts (31, 63, 15
 * bytes); -ENOMEM (the index is then as it was). O((2 + k) log n + m log
 * m) for k popular and m cached images. */
int sched_placement_host_update(struct sched_placement *p, const struct Yun__HostRecord *host,
                                const char *az);
/* Removes the host 'host_id' and what it claimed. -ENOENT if unknown. */
int sched_placement_host_remove(struct sched_placement *p, const char *host_id);

size_t sched_placement_n_hosts(const struct sched_placement *p);
/* Fills '*ret' with the index's view of 'host_id'. -ENOENT if unknown. */
int sched_placement_host_get(const struct sched_placement *p, const char *host_id,
                             struct sched_placement_host_info *ret);

/* Adds a claim of 'vcpus', 'ram_mb', 'disk_gb' on 'host_id' to the index,
 * after checking that it fits (state and filters aside).
 * YUN_E_NOVALIDHOST when it does not, -ENOENT for an unknown host.
 * O(log n). */
int sched_placement_claim(struct sched_placement *p, const char *host_id, uint32_t vcpus,
                          uint32_t ram_mb, uint32_t disk_gb);
/* Gives a claim back (usage never drops below zero). -ENOENT for an
 * unknown host. O(log n). */
int sched_placement_release(struct sched_placement *p, const char *host_id, uint32_t vcpus,
                            uint32_t ram_mb, uint32_t disk_gb);
/* sched_placement_release of a Claim record (from release_txn). */
int sched_placement_release_claim(struct sched_placement *p, const struct Yun__Claim *claim);

/* Chooses the host for one instance described by 'req', changing nothing
 * (no claim). Filters: not in 'ignore_hosts', up, enabled, zone, arch,
 * hypervisor type, server group (hard policies), then vCPU, RAM and disk
 * after the allocation ratios. Weighers: RAM (spread or pack), image
 * cache, soft group policies; ties go to the host with more free RAM in
 * the weigher's direction, then to the smaller host id.
 * Returns 0 and '*ret_host_id' (borrowed until the host is updated or
 * removed); YUN_E_NOVALIDHOST when no host passes, with a sentence in
 * 'reason' (may be NULL) naming how many hosts each filter eliminated;
 * -EINVAL for a bad request. Typically O(log n) (docs/placement.md). */
int sched_placement_pick(struct sched_placement *p, const struct sched_placement_request *req,
                         const char **ret_host_id, char *reason, size_t reason_size);

/* Places between 'min_count' (>= 1) and 'max_count' instances like 'req'
 * in one go: picks a host for each in turn and claims it in the index, so
 * that each pick sees the previous ones (and, for a server group, each
 * placed instance counts as a member for the next). With 'txn' (a write
 * transaction) each claim is also made durable through
 * sched_placement_claim_txn for 'instance_ids[i]' (required then, one per
 * instance); a host whose stored usage says it is full (another writer
 * took it) has its index usage reloaded from the store and is skipped.
 * 'txn' NULL places in memory only.
 * Returns 0, the placed instances in 'ret_allocs' (room for 'max_count')
 * and their number in '*ret_count'. The index already holds the claims:
 * if 'txn' is then aborted or its commit fails, the caller gives them
 * back with sched_placement_undo. On failure nothing is claimed in the
 * index and the caller must abort 'txn' (it may hold partial writes):
 * YUN_E_NOVALIDHOST when fewer than 'min_count' fit (with 'reason'),
 * -EEXIST when an instance already has a claim, -EINVAL, or a store
 * error. */
int sched_placement_place(struct sched_placement *p, struct yun_txn *txn,
                          const struct sched_placement_request *req,
                          const char *const *instance_ids, size_t min_count, size_t max_count,
                          struct sched_placement_alloc *ret_allocs, size_t *ret_count,
                          char *reason, size_t reason_size);
/* Gives back the index claims of 'n' allocations from place. */
void sched_placement_undo(struct sched_placement *p, const struct sched_placement_alloc *allocs,
                          size_t n);

/* Durable claim in the caller's write transaction 'txn': checks that
 * 'claim' (instance_id, host_id, amounts; created_us 0 = now) fits on its
 * host by the stored HostRecord's inventory, 'cfg' and the stored
 * HostUsageSum, then writes the Claim and the new HostUsageSum. LMDB
 * serialises write transactions, across processes too, so of two claims
 * on the last slot the second sees the first's sums. Returns 0;
 * YUN_E_NOVALIDHOST when it does not fit; -EEXIST when the instance
 * already has a claim; YUN_E_NOHOST when the host has no record;
 * -EINVAL; a store error (abort 'txn' then). Touches no index. */
int sched_placement_claim_txn(struct yun_txn *txn, const struct sched_placement_config *cfg,
                              const struct Yun__Claim *claim);
/* Durable release in the write transaction 'txn': deletes the Claim of
 * 'instance_id' and subtracts it from its host's HostUsageSum (the record
 * goes when it reaches zero instances). Returns 0 and, when 'ret_claim'
 * is not NULL, the deleted claim (free with
 * protobuf_c_message_free_unpacked), for sched_placement_release_claim
 * once 'txn' committed; -ENOENT when the instance has no claim. */
int sched_placement_release_txn(struct yun_txn *txn, const char *instance_id,
                                struct Yun__Claim **ret_claim);
/* Reloads the index's usage of 'host_id' from its stored HostUsageSum
 * (zero when none). -ENOENT for a host not in the index. */
int sched_placement_sync_host_txn(struct sched_placement *p, struct yun_txn *txn,
                                  const char *host_id);

/* The availability zone of a stored host, for load; NULL = default. */
typedef const char *(*sched_placement_az_fn)(const struct Yun__HostRecord *host, void *data);

/* Rebuilds the index from the store at start: every record of "hosts"
 * (zone from 'az_fn', which may be NULL) and the sum of the claims in
 * "claims" on each. Claims of unknown hosts are skipped with a warning.
 * 'txn' may be read-only. Returns 0; on failure the index is left empty
 * and the error returned (-EBADMSG for a record that does not decode). */
int sched_placement_load(struct sched_placement *p, struct yun_txn *txn,
                         sched_placement_az_fn az_fn, void *data);

/* Compares each stored HostUsageSum with the sum of the stored claims of
 * its host and, when 'repair' (write 'txn' needed), rewrites those that
 * differ from the claims. Returns 0 and the number of hosts that differed
 * in '*ret_mismatches' (may be NULL). */
int sched_placement_check_usage_txn(struct yun_txn *txn, bool repair, size_t *ret_mismatches);

/* Writes a text dump of the index, one line per host sorted by id, to
 * '*ret_text' (the caller frees): for the control socket and for tests
 * comparing two indexes. */
int sched_placement_dump(const struct sched_placement *p, char **ret_text);
/* Checks the index's internal invariants (trees balanced and ordered,
 * memberships consistent). 0 or -EUCLEAN. O(n log n): debug and tests. */
int sched_placement_verify(const struct sched_placement *p);
