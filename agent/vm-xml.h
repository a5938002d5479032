/* SPDX-License-Identifier: Apache-2.0
 * vm-xml.h: the libvirt domain XML of an instance, built from a plain
 * description (struct agent_vm_spec) and nothing else, so the same spec
 * always gives the same bytes (tests/data/vm-xml/ holds golden files).
 * Every disk states its format and its backing chain explicitly: libvirt
 * and QEMU never probe a format, so a guest that writes a qcow2 header into
 * its own disk cannot make the host open other files (OSSA-2014-009,
 * OSSA-2016-001). Neighbours: agent/vm.c runs it through libvirt. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent_vm_nic {
    const char *mac;     /* "fa:16:3e:..." */
    const char *tap;     /* the tap device netplug made, or NULL: the slot only */
    const char *port_id; /* for the metadata service */
};

struct agent_vm_spec {
    const char *id;           /* instance UUID: the domain's uuid */
    const char *name;         /* the user's name: the domain's title */
    const char *project;
    const char *virt_type;    /* "qemu" (TCG) | "kvm" */
    const char *arch;         /* "x86_64" */
    uint32_t vcpus;
    uint32_t ram_mb;

    /* Root disk: a qcow2 overlay whose backing file is the cached base. */
    const char *disk_path;
    const char *disk_format;    /* the overlay's: "qcow2" */
    const char *backing_path;   /* NULL: no backing file */
    const char *backing_format; /* the base image's recorded format */

    /* Direct kernel boot (images with kernel_id/ramdisk_id); NULL = boot
     * from the disk. */
    const char *kernel_path;
    const char *initrd_path;
    const char *cmdline;

    const char *console_log;  /* the serial console's file */
    const struct agent_vm_nic *nics;
    size_t n_nics;
};

/* The domain name libvirt knows an instance by: "yun-<id>". */
#define AGENT_VM_DOMAIN_PREFIX "yun-"

/* Builds the domain XML of 'spec' into '*ret' (malloc'ed, NUL-terminated).
 * Returns -EINVAL when a required field is missing or a value is out of
 * range, -ENOMEM otherwise failing. */
int agent_vm_xml_build(const struct agent_vm_spec *spec, char **ret);
