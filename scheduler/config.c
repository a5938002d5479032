/* SPDX-License-Identifier: Apache-2.0
 * config.c: every key of scheduler.conf, with its default and help. The
 * defaults run an all-in-one cloud on one machine. contrib/config/
 * scheduler.conf is `yun-scheduler --dump-config` and a test keeps it so. */
#include <stddef.h>
#include <string.h>

#include "err.h"
#include "scheduler.h"
#include "util.h"

#define K(sec, name, type, field, def, lo, hi, text)                                   \
    { sec, name, type, offsetof(struct sched_config, field), def, lo, hi, text }

const struct yun_cfg_key sched_config_table[] = {
    K("scheduler", "bus_url", YUN_CFG_STRING, bus_url, "tcp://127.0.0.1:7700", 0, 0,
      "nanomsg URL the scheduler serves the bus on (agents and clients connect here)."),
    K("scheduler", "state_dir", YUN_CFG_STRING, state_dir, "/var/lib/yun/scheduler", 0, 0,
      "Directory of the scheduler's LMDB state of record."),
    K("scheduler", "secret_file", YUN_CFG_STRING, secret_file, "/etc/yun/cluster.key", 0, 0,
      "The cluster secret every peer key derives from; root-only, made by 'yun-scheduler init'."),
    K("scheduler", "log_file", YUN_CFG_STRING, log_file, "-", 0, 0,
      "Where log lines go: a file path, or - for standard error."),
    K("scheduler", "log_level", YUN_CFG_LOGLEVEL, log_level, "info", 0, 0,
      "Most verbose level logged: err, warn, notice, info or debug."),
    K("scheduler", "worker_threads", YUN_CFG_U32, worker_threads, "2", 1, 64,
      "Threads for slow work kept off the event loop: password hashes (a login costs about "
      "a third of a second of one core) and SSH key generation."),
    K("scheduler", "worker_queue", YUN_CFG_U32, worker_queue, "128", 1, 100000,
      "Logins and other slow jobs queued or running at once; more are refused with EBUSY."),
    K("bus", "max_message_size", YUN_CFG_U32, max_message_size, "4194304", 4096, 268435456,
      "Largest message body in bytes; larger ones are refused by sender and receiver."),
    K("bus", "message_window_s", YUN_CFG_U32, message_window_s, "60", 1, 3600,
      "Seconds a message's timestamp may differ from this host's clock."),
    K("bus", "max_cached_replies", YUN_CFG_U32, max_cached_replies, "16384", 1, 10000000,
      "Replies kept to answer re-sent requests without running them twice."),
    K("hosts", "down_after_missed_heartbeats", YUN_CFG_U32, host_down_after_missed, "3", 1,
      1000, "A host is marked down after this many heartbeat intervals without one."),
    K("hosts", "check_interval_ms", YUN_CFG_U32, host_check_interval_ms, "1000", 100, 60000,
      "How often the scheduler looks for hosts whose heartbeats stopped."),
    K("hosts", "heartbeat_write_interval_s", YUN_CFG_U32, host_heartbeat_write_interval_s, "60",
      0, 3600, "A heartbeat that changes nothing but the time and usage is written to the "
      "store only when the stored one is this old (kept in memory meanwhile); 0 writes every "
      "heartbeat."),
    K("images", "image_dir", YUN_CFG_STRING, image_dir, "", 0, 0,
      "Directory of the image bytes; empty means the 'images' directory inside state_dir."),
    K("images", "chunk_size", YUN_CFG_U32, image_chunk_size, "1048576", 4096, 67108864,
      "Largest slice of image data in one upload or download message, in bytes; must stay "
      "below bus.max_message_size by at least 4096."),
    K("images", "upload_idle_timeout_s", YUN_CFG_U32, image_upload_idle_timeout_s, "60", 1,
      86400, "An upload that receives no chunk for this many seconds is killed and its bytes "
      "removed."),
    K("images", "max_virtual_size_gb", YUN_CFG_U32, image_max_virtual_size_gb, "1024", 1,
      1048576, "Largest virtual size, and stored size, of an image in GiB; larger uploads are "
      "refused."),
    K("images", "max_uploads", YUN_CFG_U32, image_max_uploads, "64", 1, 100000,
      "Uploads in progress at once; more are refused until one ends."),
    K("images", "max_images_per_project", YUN_CFG_U32, image_max_per_project, "1000", 1,
      10000000, "Image records a project may own (deleted images do not count)."),
    K("images", "tombstone_retention_s", YUN_CFG_U32, image_tombstone_retention_s, "604800",
      0, 315360000, "A deleted image stays as a tombstone, so that its id is not taken again, "
      "for this many seconds, then its record is purged; 0 keeps tombstones forever."),
    K("images", "store_min_free_mb", YUN_CFG_U32, image_store_min_free_mb, "1024", 0,
      1073741824, "Free space, in MiB, that uploads always leave on the file system of "
      "image_dir: an upload that would go below it is refused before it starts (the image "
      "stays queued) or, once started, killed with its bytes removed."),
    K("images", "project_size_total_mb", YUN_CFG_U32, image_project_size_total_mb, "0", 0,
      4294967295u, "Bytes of image data, in MiB, that one project may hold: active and "
      "deactivated images and uploads in progress (Glance's image_size_total). An upload that "
      "would pass it is refused before it starts or killed once started. 0: no limit."),
    K("audit", "retention_days", YUN_CFG_U32, audit_retention_days, "90", 0, 36500,
      "Audit records older than this many days are dropped; 0 keeps them forever."),
    K("identity", "token_key_dir", YUN_CFG_STRING, token_key_dir, "", 0, 0,
      "Directory of the token keys (mode 0700, made by 'yun-scheduler init', rotated by "
      "'yun-scheduler rotate-keys'); empty means 'token-keys' inside state_dir."),
    K("identity", "token_ttl_s", YUN_CFG_U32, token_ttl_s, "3600", 60, 604800,
      "Lifetime of a token in seconds. Rotate keys no more often than this: a token "
      "outlives one rotation, not two."),
    K("identity", "max_active_keys", YUN_CFG_U32, token_max_active_keys, "3", 3, 32,
      "Token keys kept by rotate-keys: the staged, the primary and the secondaries."),
    K("identity", "lockout_attempts", YUN_CFG_U32, lockout_attempts, "5", 0, 1000,
      "Failed logins in a row that lock a user out; 0 never locks."),
    K("identity", "lockout_minutes", YUN_CFG_U32, lockout_minutes, "15", 1, 10080,
      "How long a locked-out user stays locked."),
    K("compute", "cpu_allocation_ratio", YUN_CFG_DOUBLE, cpu_allocation_ratio, "4.0", 0.01,
      1000, "Virtual CPUs placement may put on each host CPU."),
    K("compute", "ram_allocation_ratio", YUN_CFG_DOUBLE, ram_allocation_ratio, "1.0", 0.01,
      1000, "Guest RAM placement may put on each MiB of host RAM (after the reservation)."),
    K("compute", "disk_allocation_ratio", YUN_CFG_DOUBLE, disk_allocation_ratio, "1.0", 0.01,
      1000, "Guest disk placement may put on each GiB of a host's state file system."),
    K("compute", "reserved_host_memory_mb", YUN_CFG_U32, reserved_host_memory_mb, "512", 0,
      1048576, "RAM of each host kept for the host itself, in MiB."),
    K("compute", "weigher", YUN_CFG_STRING, weigher, "spread", 0, 0,
      "spread puts a new server on the host with the most free RAM; pack on the fullest "
      "host that fits."),
    K("compute", "max_attempts", YUN_CFG_U32, compute_max_attempts, "3", 1, 100,
      "Hosts a server is tried on before its spawn fails for good (ERROR)."),
    K("compute", "spawn_timeout_s", YUN_CFG_U32, compute_spawn_timeout_s, "300", 5, 86400,
      "A spawn or rebuild that has not finished after this many seconds fails (and a "
      "spawn is tried on another host)."),
    K("compute", "action_timeout_s", YUN_CFG_U32, compute_action_timeout_s, "600", 5, 86400,
      "A start, stop, reboot, pause, suspend or delete whose event has not come after this "
      "many seconds ends with a fault on the server."),
    K("compute", "agent_timeout_ms", YUN_CFG_U32, compute_agent_timeout_ms, "10000", 100,
      600000, "How long the scheduler waits for an agent to answer one request."),
    K("compute", "agent_queue_max", YUN_CFG_U32, compute_agent_queue_max, "4096", 1, 1000000,
      "Requests queued to one agent at once (it takes one at a time); more are refused."),
    K("compute", "agent_connections_max", YUN_CFG_U32, compute_agent_connections_max, "256",
      1, 400, "Agent command sockets kept open at once; the least recently used idle one is "
      "closed to open another (nanomsg allows 512 sockets per process)."),
    K("compute", "max_instances_per_project", YUN_CFG_U32, compute_max_instances_per_project,
      "100", 1, 10000000, "Servers a project may have (deleted ones do not count)."),
    K("compute", "deleted_retention_s", YUN_CFG_U32, compute_deleted_retention_s, "86400", 0,
      31536000, "How long a deleted server's record stays visible (by id, or listed with "
      "status DELETED); 0 removes it at once."),
    K("compute", "sweep_interval_s", YUN_CFG_U32, compute_sweep_interval_s, "5", 1, 3600,
      "How often the scheduler looks for spawns and tasks that timed out."),
    K("network", "default_network_type", YUN_CFG_STRING, network_default_type, "vxlan", 0, 0,
      "The type of a network created without one: flat, vlan or vxlan."),
    K("network", "physical_network", YUN_CFG_STRING, network_physical_network, "physnet1", 0,
      0, "The physical network label of flat and vlan networks created without one; agents "
      "map labels to interfaces."),
    K("network", "vni_min", YUN_CFG_U32, network_vni_min, "1000", 1, 16777215,
      "First VXLAN network identifier given to vxlan networks."),
    K("network", "vni_max", YUN_CFG_U32, network_vni_max, "1999", 1, 16777215,
      "Last VXLAN network identifier given to vxlan networks."),
    K("network", "vlan_min", YUN_CFG_U32, network_vlan_min, "100", 1, 4094,
      "First VLAN id given to vlan networks of a physical network."),
    K("network", "vlan_max", YUN_CFG_U32, network_vlan_max, "199", 1, 4094,
      "Last VLAN id given to vlan networks of a physical network."),
    K("network", "vxlan_mtu", YUN_CFG_U32, network_vxlan_mtu, "1450", 68, 9000,
      "MTU of vxlan networks created without one (1500 less the 50 bytes of VXLAN over IPv4)."),
    K("network", "mtu", YUN_CFG_U32, network_mtu, "1500", 68, 9000,
      "MTU of flat and vlan networks created without one."),
};

int
sched_network_config_check(const struct sched_config *cfg, const char **ret_why)
{
    const char *t = cfg->network_default_type ? cfg->network_default_type : "";
    if (strcmp(t, "flat") != 0 && strcmp(t, "vlan") != 0 && strcmp(t, "vxlan") != 0)
        *ret_why = "network.default_network_type is not flat, vlan or vxlan";
    else if (!yun_name_is_valid(cfg->network_physical_network, 64))
        *ret_why = "network.physical_network is not 1 to 64 of [A-Za-z0-9._-]";
    else if (cfg->network_vni_min > cfg->network_vni_max)
        *ret_why = "network.vni_min is above network.vni_max";
    else if (cfg->network_vlan_min > cfg->network_vlan_max)
        *ret_why = "network.vlan_min is above network.vlan_max";
    else
        return 0;
    return YUN_E_CONFIG;
}

const size_t sched_config_table_size = sizeof sched_config_table / sizeof sched_config_table[0];
