/* SPDX-License-Identifier: Apache-2.0
 * vm-xml.c: an instance's libvirt domain XML (see vm-xml.h), written with
 * libxml2's text writer so that every value is escaped by a library that
 * knows XML, not by hand. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/xmlwriter.h>

#include "cleanup.h"
#include "util.h"
#include "vm-xml.h"

#define YUN_XMLNS "https://yun.dev/xmlns/instance/1"

/* A writer whose every call is checked once at the end: libxml2 returns
 * < 0 on failure and the first failure sticks. */
struct xw {
    xmlTextWriterPtr w;
    int err;
};

static void
xw_check(struct xw *x, int r)
{
    if (r < 0 && x->err == 0)
        x->err = -ENOMEM;
}

static void
xw_start(struct xw *x, const char *name)
{
    xw_check(x, xmlTextWriterStartElement(x->w, BAD_CAST name));
}

static void
xw_end(struct xw *x)
{
    xw_check(x, xmlTextWriterEndElement(x->w));
}

static void
xw_attr(struct xw *x, const char *name, const char *value)
{
    xw_check(x, xmlTextWriterWriteAttribute(x->w, BAD_CAST name, BAD_CAST value));
}

static void
xw_text_element(struct xw *x, const char *name, const char *text)
{
    xw_check(x, xmlTextWriterWriteElement(x->w, BAD_CAST name, BAD_CAST text));
}

static void
xw_empty(struct xw *x, const char *name)
{
    xw_start(x, name);
    xw_end(x);
}

static void
xw_uint_element(struct xw *x, const char *name, const char *unit, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    xw_start(x, name);
    if (unit)
        xw_attr(x, "unit", unit);
    xw_check(x, xmlTextWriterWriteString(x->w, BAD_CAST num));
    xw_end(x);
}

static bool
spec_is_valid(const struct agent_vm_spec *s)
{
    if (!s->id || !yun_uuid_is_valid(s->id) || !s->name || !s->virt_type || !s->arch ||
        !s->disk_path || !s->disk_format || !s->console_log)
        return false;
    if (strcmp(s->virt_type, "qemu") != 0 && strcmp(s->virt_type, "kvm") != 0)
        return false;
    if (s->vcpus == 0 || s->vcpus > 1024 || s->ram_mb < 16 || s->ram_mb > 16 * 1024 * 1024)
        return false;
    if (s->backing_path && !s->backing_format)
        return false;
    if (s->initrd_path && !s->kernel_path)
        return false;
    if (s->n_nics > 0 && !s->nics)
        return false;
    for (size_t i = 0; i < s->n_nics; i++)
        if (!s->nics[i].mac)
            return false;
    return true;
}

static void
write_disk(struct xw *x, const struct agent_vm_spec *s)
{
    xw_start(x, "disk");
    xw_attr(x, "type", "file");
    xw_attr(x, "device", "disk");
    xw_start(x, "driver");
    xw_attr(x, "name", "qemu");
    xw_attr(x, "type", s->disk_format);
    xw_attr(x, "discard", "unmap");
    xw_end(x);
    xw_start(x, "source");
    xw_attr(x, "file", s->disk_path);
    xw_end(x);
    /* The whole chain is stated, ending in an empty backingStore, so
     * libvirt neither probes the overlay's header nor follows anything the
     * guest may have written into it. */
    xw_start(x, "backingStore");
    if (s->backing_path) {
        xw_attr(x, "type", "file");
        xw_start(x, "format");
        xw_attr(x, "type", s->backing_format);
        xw_end(x);
        xw_start(x, "source");
        xw_attr(x, "file", s->backing_path);
        /* The base is a shared file of the image cache (0644 in a 0711
         * directory: QEMU reads it as it is). Relabelled, it would change
         * owner and ctime at every start and stop of any domain on it,
         * and the cache would read it back whole before its next use. */
        xw_start(x, "seclabel");
        xw_attr(x, "model", "dac");
        xw_attr(x, "relabel", "no");
        xw_end(x);
        xw_end(x);
        xw_empty(x, "backingStore");
    }
    xw_end(x);
    xw_start(x, "target");
    xw_attr(x, "dev", "vda");
    xw_attr(x, "bus", "virtio");
    xw_end(x);
    xw_end(x);
}

static void
write_nic(struct xw *x, const struct agent_vm_nic *n)
{
    xw_start(x, "interface");
    xw_attr(x, "type", "ethernet");
    xw_start(x, "mac");
    xw_attr(x, "address", n->mac);
    xw_end(x);
    if (n->tap) {
        /* netplug made the tap; libvirt must use it as it is. */
        xw_start(x, "target");
        xw_attr(x, "dev", n->tap);
        xw_attr(x, "managed", "no");
        xw_end(x);
    }
    xw_start(x, "model");
    xw_attr(x, "type", "virtio");
    xw_end(x);
    xw_end(x);
}

int
agent_vm_xml_build(const struct agent_vm_spec *s, char **ret)
{
    if (!spec_is_valid(s))
        return -EINVAL;

    xmlBufferPtr buf = xmlBufferCreate();
    if (!buf)
        return -ENOMEM;
    struct xw x = { .w = xmlNewTextWriterMemory(buf, 0) };
    if (!x.w) {
        xmlBufferFree(buf);
        return -ENOMEM;
    }
    xw_check(&x, xmlTextWriterSetIndent(x.w, 1));
    xw_check(&x, xmlTextWriterSetIndentString(x.w, BAD_CAST "  "));

    char dom_name[64];
    snprintf(dom_name, sizeof dom_name, AGENT_VM_DOMAIN_PREFIX "%s", s->id);

    xw_start(&x, "domain");
    xw_attr(&x, "type", s->virt_type);
    xw_text_element(&x, "name", dom_name);
    xw_text_element(&x, "uuid", s->id);
    xw_text_element(&x, "title", s->name);

    /* Who the domain belongs to, for reconciliation after a crash. */
    xw_start(&x, "metadata");
    xw_check(&x, xmlTextWriterStartElementNS(x.w, BAD_CAST "yun", BAD_CAST "instance",
                                             BAD_CAST YUN_XMLNS));
    xw_check(&x, xmlTextWriterWriteElementNS(x.w, BAD_CAST "yun", BAD_CAST "id", NULL,
                                             BAD_CAST s->id));
    xw_check(&x, xmlTextWriterWriteElementNS(x.w, BAD_CAST "yun", BAD_CAST "name", NULL,
                                             BAD_CAST s->name));
    xw_check(&x, xmlTextWriterWriteElementNS(x.w, BAD_CAST "yun", BAD_CAST "project", NULL,
                                             BAD_CAST(s->project ? s->project : "")));
    xw_end(&x);
    xw_end(&x);

    xw_uint_element(&x, "memory", "MiB", s->ram_mb);
    xw_uint_element(&x, "vcpu", NULL, s->vcpus);

    xw_start(&x, "os");
    xw_start(&x, "type");
    xw_attr(&x, "arch", s->arch);
    xw_check(&x, xmlTextWriterWriteString(x.w, BAD_CAST "hvm"));
    xw_end(&x);
    if (s->kernel_path) {
        xw_text_element(&x, "kernel", s->kernel_path);
        if (s->initrd_path)
            xw_text_element(&x, "initrd", s->initrd_path);
        if (s->cmdline)
            xw_text_element(&x, "cmdline", s->cmdline);
    } else {
        xw_start(&x, "boot");
        xw_attr(&x, "dev", "hd");
        xw_end(&x);
    }
    xw_end(&x);

    /* Without ACPI a guest's own poweroff never ends its domain. */
    xw_start(&x, "features");
    xw_empty(&x, "acpi");
    xw_end(&x);
    if (strcmp(s->virt_type, "kvm") == 0) {
        xw_start(&x, "cpu");
        xw_attr(&x, "mode", "host-passthrough");
        xw_end(&x);
    }
    xw_start(&x, "clock");
    xw_attr(&x, "offset", "utc");
    xw_end(&x);
    xw_text_element(&x, "on_poweroff", "destroy");
    xw_text_element(&x, "on_reboot", "restart");
    xw_text_element(&x, "on_crash", "destroy");

    xw_start(&x, "devices");
    write_disk(&x, s);
    for (size_t i = 0; i < s->n_nics; i++)
        write_nic(&x, &s->nics[i]);
    /* The serial console goes to a file the agent tails for `yun server
     * console`; libvirt 9 wants the console as a file too, on the same
     * path, rather than type='serial'. */
    xw_start(&x, "serial");
    xw_attr(&x, "type", "file");
    xw_start(&x, "source");
    xw_attr(&x, "path", s->console_log);
    xw_attr(&x, "append", "on");
    xw_end(&x);
    xw_start(&x, "target");
    xw_attr(&x, "port", "0");
    xw_end(&x);
    xw_end(&x);
    xw_start(&x, "console");
    xw_attr(&x, "type", "file");
    xw_start(&x, "source");
    xw_attr(&x, "path", s->console_log);
    xw_attr(&x, "append", "on");
    xw_end(&x);
    xw_start(&x, "target");
    xw_attr(&x, "type", "serial");
    xw_attr(&x, "port", "0");
    xw_end(&x);
    xw_end(&x);
    xw_start(&x, "memballoon");
    xw_attr(&x, "model", "none");
    xw_end(&x);
    xw_end(&x); /* devices */
    xw_end(&x); /* domain */
    xw_check(&x, xmlTextWriterEndDocument(x.w));
    xmlFreeTextWriter(x.w);

    int r = x.err;
    if (r == 0) {
        *ret = strndup((const char *)xmlBufferContent(buf), (size_t)xmlBufferLength(buf));
        if (!*ret)
            r = -ENOMEM;
    }
    xmlBufferFree(buf);
    return r;
}
