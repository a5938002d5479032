/* SPDX-License-Identifier: Apache-2.0
 * config.c: every key of agent.conf, with its default and help. The
 * defaults run an all-in-one cloud on one machine. contrib/config/agent.conf
 * is `yun-agent --dump-config` and a test keeps it so. */
#include <stddef.h>

#include "agent.h"
#include "image-cache.h"

#define K(sec, name, type, field, def, lo, hi, text)                                   \
    { sec, name, type, offsetof(struct agent_config, field), def, lo, hi, text }

const struct yun_cfg_key agent_config_table[] = {
    K("agent", "key_file", YUN_CFG_STRING, key_file, "/etc/yun/agent.key", 0, 0,
      "This agent's bus key, from 'yun-scheduler issue-key --agent NAME'; its id is the host name."),
    K("agent", "scheduler_url", YUN_CFG_STRING, scheduler_url, "", 0, 0,
      "The scheduler's bus URL; empty takes the one written in the key file."),
    K("agent", "state_dir", YUN_CFG_STRING, state_dir, "/var/lib/yun/agent", 0, 0,
      "Directory of the agent's LMDB state and its instances' files."),
    K("agent", "log_file", YUN_CFG_STRING, log_file, "-", 0, 0,
      "Where log lines go: a file path, or - for standard error."),
    K("agent", "log_level", YUN_CFG_LOGLEVEL, log_level, "info", 0, 0,
      "Most verbose level logged: err, warn, notice, info or debug."),
    K("agent", "heartbeat_interval_s", YUN_CFG_U32, heartbeat_interval_s, "5", 1, 3600,
      "Seconds between heartbeats to the scheduler."),
    K("agent", "listen_url", YUN_CFG_STRING, listen_url, "tcp://127.0.0.1:7710", 0, 0,
      "Where the scheduler's commands are served; reported to the scheduler as this host's "
      "address, so it must be one the scheduler can reach."),
    K("agent", "request_timeout_ms", YUN_CFG_U32, request_timeout_ms, "5000", 100, 600000,
      "How long a request to the scheduler may go unanswered."),
    K("libvirt", "uri", YUN_CFG_STRING, libvirt_uri, "qemu:///system", 0, 0,
      "The libvirt connection; test:///default runs the same code with no VMs."),
    K("libvirt", "virt_type", YUN_CFG_STRING, virt_type, "qemu", 0, 0,
      "qemu (TCG, no hardware virtualisation) or kvm."),
    K("libvirt", "storage_pool", YUN_CFG_STRING, storage_pool, "yun-instances", 0, 0,
      "The libvirt directory pool at <state_dir>/instances that holds the instances' disks; "
      "made if missing. Agents sharing one libvirtd need one each."),
    K("libvirt", "shutdown_timeout_s", YUN_CFG_U32, shutdown_timeout_s, "60", 0, 3600,
      "Seconds a stop or soft reboot waits for the guest (ACPI) before powering it off or "
      "resetting it."),
    K("bus", "max_message_size", YUN_CFG_U32, max_message_size, "4194304", 4096, 268435456,
      "Largest message body in bytes; larger ones are refused by sender and receiver."),
    K("bus", "message_window_s", YUN_CFG_U32, message_window_s, "60", 1, 3600,
      "Seconds a message's timestamp may differ from this host's clock."),
    K("images", "cache_dir", YUN_CFG_STRING, image_cache_dir, "", 0, 0,
      "Directory of the cached base images, one file per sha512; empty means <state_dir>/images."),
    K("images", "cache_max_size_mb", YUN_CFG_U64, image_cache_max_size_mb, "10240", 1,
      1073741824,
      "MiB of cached images kept; above it, unused images go, least recently used first."),
    K("images", "max_virtual_size_gb", YUN_CFG_U32, image_max_virtual_size_gb, "1024", 0,
      1048576, "Largest virtual disk size in GiB an image may declare; 0 means no limit."),
    K("images", "fetch_chunk_kb", YUN_CFG_U32, image_fetch_chunk_kb, "1024", 4, 65536,
      "KiB asked of the scheduler per download request; must fit bus.max_message_size."),
    K("images", "fetch_window", YUN_CFG_U32, image_fetch_window, "4", 1,
      AGENT_IMAGE_FETCH_WINDOW_MAX,
      "Download requests kept in flight to the scheduler, each on a socket of its own, so "
      "that a fetch does not wait a round trip per chunk; up to this many chunks are held in "
      "memory."),
    K("images", "verify_every_use", YUN_CFG_BOOL, image_verify_every_use, "false", 0, 0,
      "Read a cached image back whole on every use, not only on its first use after start."),
    K("images", "gc_interval_s", YUN_CFG_U32, image_gc_interval_s, "60", 1, 86400,
      "Seconds between the periodic evictions of the cache down to its size cap."),
    K("network", "enabled", YUN_CFG_BOOL, network_enabled, "true", 0, 0,
      "Wire the instances' networks on this host (bridges, taps, nftables, dnsmasq, "
      "metadata); false refuses network states (test hosts that share one machine)."),
    K("network", "tunnel_ip", YUN_CFG_STRING, network_tunnel_ip, "", 0, 0,
      "This host's address on the underlay, the local end of its VXLAN links, reported to the "
      "scheduler so other hosts reach this one; empty: VXLAN networks stay within this host."),
    K("network", "tunnel_dev", YUN_CFG_STRING, network_tunnel_dev, "", 0, 0,
      "The underlay interface VXLAN links are bound to; empty lets routing choose."),
    K("network", "physical_interface_mappings", YUN_CFG_STRING, network_physical_mappings, "",
      0, 0,
      "Physical networks of flat and VLAN networks, as label:interface pairs separated by "
      "commas, e.g. physnet1:eth1."),
    K("network", "vxlan_port", YUN_CFG_U32, network_vxlan_port, "4789", 1, 65535,
      "UDP port of the VXLAN links; the same on every host."),
    K("network", "run_dir", YUN_CFG_STRING, network_run_dir, "/run/yun/agent", 0, 0,
      "Directory of the network services' runtime files: the DHCP servers' hosts, options and "
      "pid files under dhcp/. dnsmasq re-reads them as its own user, who must be able to "
      "traverse it."),
    K("network", "dnsmasq_path", YUN_CFG_STRING, dnsmasq_path, "/usr/sbin/dnsmasq", 0, 0,
      "The dnsmasq binary run as each network's DHCP server."),
    K("network", "resync_interval_s", YUN_CFG_U32, network_resync_interval_s, "60", 0, 86400,
      "Every this many seconds the agent applies its last network state again, making anew "
      "what was removed behind its back (links, firewall rules, neighbour pins, dnsmasq); 0: "
      "only when a state comes and at start."),
};

const size_t agent_config_table_size = sizeof agent_config_table / sizeof agent_config_table[0];
