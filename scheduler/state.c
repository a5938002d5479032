/* SPDX-License-Identifier: Apache-2.0
 * state.c: the scheduler's LMDB environment, the cloud's state of record:
 * which record databases it holds and the schema version they follow. */
#include "scheduler.h"
#include "store.h"

/* images: ImageRecord by id (deleted ones stay, as tombstones);
 * image_names: the index "name NUL id" -> empty, for look-ups by name;
 * audit: AuditRecord by big-endian time_us + request id (audit.c). */
const char *const sched_store_dbs[] = {
    "peers", "hosts", "host_names", "images", "image_names", "audit", NULL,
};

int
sched_store_open(struct sched *s)
{
    struct yun_store_options o = {
        .path = s->cfg.state_dir,
        .dbs = sched_store_dbs,
        .schema_version = SCHED_SCHEMA_VERSION,
    };
    return yun_store_open(&o, &s->store);
}
