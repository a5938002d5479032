/* SPDX-License-Identifier: Apache-2.0
 * inventory.c: what this host has (CPUs, memory, the disk of the state
 * directory, architecture, hypervisor) and how much of it is free, read
 * from libvirt and the kernel. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>

#include <libvirt/virterror.h>

#include "agent.h"
#include "err.h"
#include "log.h"

YUN_LOG_MODULE("agent.inventory");

static void
format_version(unsigned long v, char *buf, size_t size)
{
    /* libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release. */
    snprintf(buf, size, "%lu.%lu.%lu", v / 1000000, (v / 1000) % 1000, v % 1000);
}

static int
disk_of(const char *path, uint64_t *ret_total_gb, uint64_t *ret_free_gb)
{
    struct statvfs st;
    if (statvfs(path, &st) < 0)
        return -errno;
    *ret_total_gb = (uint64_t)st.f_blocks * st.f_frsize >> 30;
    *ret_free_gb = (uint64_t)st.f_bavail * st.f_frsize >> 30;
    return 0;
}

int
agent_inventory_read(struct agent *a)
{
    struct agent_inventory *inv = &a->inv;
    Yun__HostInventory init = YUN__HOST_INVENTORY__INIT;
    inv->msg = init;

    virNodeInfo node;
    if (virNodeGetInfo(a->conn, &node) < 0)
        return log_err_errno(-EIO, "cannot read node info from libvirt: %s",
                             virGetLastErrorMessage());
    inv->msg.cpus = node.cpus;
    inv->msg.memory_mb = node.memory / 1024;
    inv->msg.cpu_mhz = node.mhz;
    snprintf(inv->cpu_model, sizeof inv->cpu_model, "%s", node.model);

    /* libvirt's node model is the CPU architecture on Linux ("x86_64"); the
     * test driver reports "i686", so trust uname for the architecture. */
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(inv->arch, sizeof inv->arch, "%s", u.machine);

    const char *type = virConnectGetType(a->conn);
    snprintf(inv->hypervisor_type, sizeof inv->hypervisor_type, "%s", type ? type : "");
    unsigned long hv = 0;
    if (virConnectGetVersion(a->conn, &hv) == 0)
        format_version(hv, inv->hypervisor_version, sizeof inv->hypervisor_version);

    uint64_t total_gb = 0, free_gb = 0;
    int r = disk_of(a->cfg.state_dir, &total_gb, &free_gb);
    if (r < 0)
        return log_err_errno(r, "cannot read the disk of '%s'", a->cfg.state_dir);
    inv->msg.disk_gb = total_gb;

    inv->msg.arch = inv->arch;
    inv->msg.hypervisor_type = inv->hypervisor_type;
    inv->msg.hypervisor_version = inv->hypervisor_version;
    inv->msg.libvirt_uri = a->cfg.libvirt_uri;
    inv->msg.virt_type = a->cfg.virt_type;
    inv->msg.agent_version = (char *)AGENT_VERSION;
    inv->msg.cpu_model = inv->cpu_model;
    return 0;
}

int
agent_usage_read(struct agent *a, Yun__HostUsage *ret)
{
    Yun__HostUsage u = YUN__HOST_USAGE__INIT;
    unsigned long long free_mem = virNodeGetFreeMemory(a->conn);
    u.free_memory_mb = free_mem / (1024 * 1024);
    uint64_t total_gb, free_gb = 0;
    if (disk_of(a->cfg.state_dir, &total_gb, &free_gb) < 0)
        free_gb = 0;
    u.free_disk_gb = free_gb;
    double load[3] = { 0 };
    if (getloadavg(load, 3) == 3) {
        u.load1 = load[0];
        u.load5 = load[1];
        u.load15 = load[2];
    }
    int n = virConnectNumOfDomains(a->conn);
    u.running_vms = n > 0 ? (uint32_t)n : 0;
    *ret = u;
    return 0;
}
