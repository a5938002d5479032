/* SPDX-License-Identifier: Apache-2.0
 * agent.h: the yun-agent daemon's shared state and what its modules offer
 * each other: config (config.c), inventory from libvirt and the host
 * (inventory.c), registration and heartbeats to the scheduler (report.c),
 * the base image cache (image-cache.c, its own header image-cache.h), the
 * instances (vm.c, its own header vm.h) and the scheduler's commands and
 * the instances' events (command.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/utsname.h>

#include <libvirt/libvirt.h>

#include "cfg.h"
#include "keyfile.h"
#include "host.pb-c.h"

struct yun_loop;
struct yun_store;
struct yun_bus_client;
struct agent_image_cache;
struct agent_vms;
struct agent_command;
struct agent_network;

struct agent_config {
    char *key_file;
    char *scheduler_url;
    char *state_dir;
    char *libvirt_uri;
    char *virt_type;
    char *log_file;
    int log_level;
    uint32_t heartbeat_interval_s;
    uint32_t request_timeout_ms;
    uint32_t max_message_size;
    uint32_t message_window_s;
    char *image_cache_dir;             /* "" = <state_dir>/images */
    uint64_t image_cache_max_size_mb;
    uint32_t image_max_virtual_size_gb; /* 0 = no limit */
    uint32_t image_fetch_chunk_kb;
    uint32_t image_fetch_window;       /* download requests in flight */
    bool image_verify_every_use;
    uint32_t image_gc_interval_s;
    char *listen_url;                  /* the command server (command.c) */
    char *storage_pool;                /* libvirt pool of the instances' disks */
    uint32_t shutdown_timeout_s;       /* graceful stop before power off */
    /* [network] (host-network.c, dhcp.h) */
    bool network_enabled;
    char *network_tunnel_ip;           /* this host's VXLAN endpoint; "" = none */
    char *network_tunnel_dev;          /* the underlay interface; "" = by route */
    char *network_physical_mappings;   /* "physnet1:eth1,..." for flat and vlan */
    uint32_t network_vxlan_port;
    char *network_run_dir;             /* DHCP servers' files (dhcp.h) */
    char *dnsmasq_path;
    uint32_t network_resync_interval_s; /* re-apply the last state; 0 = never */
};

extern const struct yun_cfg_key agent_config_table[];
extern const size_t agent_config_table_size;

#define AGENT_CONFIG_FILE_DEFAULT "/etc/yun/agent.conf"
#define AGENT_SCHEMA_VERSION 1
#define AGENT_VERSION "0.1.0"

/* What this host is, read once at start (strings owned here). */
struct agent_inventory {
    Yun__HostInventory msg;
    char arch[sizeof(((struct utsname *)0)->machine)];
    char hypervisor_type[64];
    char hypervisor_version[32];
    char cpu_model[64];
};

enum agent_pending {
    AGENT_PENDING_NONE,
    AGENT_PENDING_REGISTER,
    AGENT_PENDING_HEARTBEAT,
};

struct agent {
    struct agent_config cfg;
    struct yun_loop *loop;
    struct yun_store *store;
    virConnectPtr conn;
    struct yun_peer_key key;
    struct yun_bus_client *bus;
    struct agent_inventory inv;

    char host_id[40];           /* given by the scheduler; "" until registered */
    bool registered;            /* the scheduler knows us in this run */
    enum agent_pending pending; /* the request in flight on the bus */
    int64_t pending_deadline_ms;
    uint64_t heartbeat_seq;
    bool scheduler_unreachable; /* logged once per outage */
    int64_t send_failures;      /* sends in a row that found no scheduler */
    int bus_watch;
    int report_timer;
    struct agent_image_cache *images;
    int64_t next_image_gc_ms;   /* when the periodic tick next runs the cache's GC */
    struct agent_vms *vms;      /* the instances (vm.c) */
    struct agent_command *cmd;  /* commands in, events out (command.c) */
    struct agent_network *net;  /* bridges, taps, rules, DHCP, metadata (host-network.h) */
};

/* inventory.c */
int agent_inventory_read(struct agent *a);
int agent_usage_read(struct agent *a, Yun__HostUsage *ret);

/* report.c */
/* The scheduler's bus URL: agent.scheduler_url, else the key file's. */
const char *agent_scheduler_url(const struct agent *a);
int agent_report_start(struct agent *a);
void agent_report_stop(struct agent *a);

/* command.c: the scheduler's commands (a bus server at agent.listen_url)
 * and the instance events and start-up sync sent back (vm.h). */
int agent_command_start(struct agent *a);
void agent_command_stop(struct agent *a);
/* report.c calls it when a registration is answered: the first one sends
 * the instance sync, and commands are served once it is answered. */
void agent_command_registered(struct agent *a);
struct Yun__InstanceEvent;
/* Queues an instance event (vm.c's) for the scheduler: sent in order,
 * after the start-up sync, on the agent's event socket. */
void agent_command_event(struct agent *a, const struct Yun__InstanceEvent *ev);
