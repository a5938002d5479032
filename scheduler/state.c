/* SPDX-License-Identifier: Apache-2.0
 * state.c: the scheduler's LMDB environment, the cloud's state of record:
 * which record databases it holds and the schema version they follow. */
#include "scheduler.h"
#include "store.h"

/* images: ImageRecord by id (deleted ones stay, as tombstones);
 * image_names: the index "name NUL id" -> empty, for look-ups by name;
 * audit: AuditRecord by big-endian time_us + request id (audit.c);
 * users, projects (by id) and their name indexes user_names and
 * project_names (name -> id); assignments ("user NUL project NUL role")
 * and assignments_by_project ("project NUL user NUL role"); revocations;
 * keypairs ("user_id NUL name"): identity, see docs/identity.md;
 * flavors, flavor_names, instances, instance_names, instance_hosts,
 * server_groups: compute (compute.h); claims and host_usage: placement
 * (placement.h); networks, subnets, ports, security_groups,
 * network_segments, port_macs, ip_allocations, default_security_groups:
 * the network model (network.h). */
const char *const sched_store_dbs[] = {
    "peers", "hosts", "host_names", "images", "image_names", "audit",
    "users", "user_names", "projects", "project_names", "assignments",
    "assignments_by_project", "revocations", "keypairs",
    "flavors", "flavor_names", "instances", "instance_names", "instance_hosts",
    "server_groups", "claims", "host_usage",
    "networks", "subnets", "ports", "security_groups", "network_segments", "port_macs",
    "ip_allocations", "default_security_groups", NULL,
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
