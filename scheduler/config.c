/* SPDX-License-Identifier: Apache-2.0
 * config.c: every key of scheduler.conf, with its default and help. The
 * defaults run an all-in-one cloud on one machine. contrib/config/
 * scheduler.conf is `yun-scheduler --dump-config` and a test keeps it so. */
#include <stddef.h>

#include "scheduler.h"

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
    K("audit", "retention_days", YUN_CFG_U32, audit_retention_days, "90", 0, 36500,
      "Audit records older than this many days are dropped; 0 keeps them forever."),
};

const size_t sched_config_table_size = sizeof sched_config_table / sizeof sched_config_table[0];
