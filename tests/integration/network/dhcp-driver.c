/* SPDX-License-Identifier: Apache-2.0
 * dhcp-driver.c: a test driver for test-dhcp-metadata.sh: reads a
 * HostNetworkState from a JSON file (proto field names; bytes as text),
 * applies it with dhcp_apply() and metadata_apply() on a yun_loop, and
 * re-reads it on SIGHUP. After each apply it writes the state's
 * generation to '<state-dir>/applied'. SIGTERM leaves the dnsmasqs
 * running (as the agent does); --stop-all applies an empty state and
 * exits. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "dhcp.h"
#include "log.h"
#include "loop.h"
#include "metadata.h"
#include "network.pb-c.h"
#include "util.h"

YUN_LOG_MODULE("test.dhcp-driver");

struct driver {
    struct yun_loop *loop;
    struct dhcp_set *dhcp;
    struct metadata *md;
    const char *state_file;
    const char *state_dir;
    const char *host;
};

static int from_json(const ProtobufCMessageDescriptor *desc, json_object *obj,
                     ProtobufCMessage **ret);

/* Sets one value of 'f' at 'p' (a field, or an element of a repeated). */
static int
value_from_json(const ProtobufCFieldDescriptor *f, json_object *v, void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (!(*(char **)p = strdup(json_object_get_string(v))))
            return -ENOMEM;
        return 0;
    case PROTOBUF_C_TYPE_BYTES: {
        const char *s = json_object_get_string(v);
        ProtobufCBinaryData *b = p;
        b->len = strlen(s);
        if (!(b->data = (uint8_t *)strdup(s)))
            return -ENOMEM;
        return 0;
    }
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)p = json_object_get_boolean(v);
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
        *(uint32_t *)p = (uint32_t)json_object_get_int64(v);
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
        *(uint64_t *)p = (uint64_t)json_object_get_int64(v);
        return 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return from_json(f->descriptor, v, (ProtobufCMessage **)p);
    default:
        return -EINVAL;
    }
}

static size_t
value_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_UINT64:
        return sizeof(uint64_t);
    default:
        return sizeof(uint32_t);
    }
}

static int
from_json(const ProtobufCMessageDescriptor *desc, json_object *obj, ProtobufCMessage **ret)
{
    if (!json_object_is_type(obj, json_type_object))
        return -EINVAL;
    ProtobufCMessage *m = calloc(1, desc->sizeof_message);
    if (!m)
        return -ENOMEM;
    desc->message_init(m);
    int r = 0;
    json_object_object_foreach(obj, key, val)
    {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(desc, key);
        if (!f) {
            fprintf(stderr, "dhcp-driver: unknown field '%s' in %s\n", key, desc->name);
            r = -EINVAL;
            break;
        }
        char *base = (char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (!json_object_is_type(val, json_type_array)) {
                r = -EINVAL;
                break;
            }
            size_t n = json_object_array_length(val);
            char *arr = calloc(n ? n : 1, value_size(f));
            if (!arr) {
                r = -ENOMEM;
                break;
            }
            *(void **)base = arr;
            size_t *count = (size_t *)((char *)m + f->quantifier_offset);
            for (size_t i = 0; r >= 0 && i < n; i++) {
                r = value_from_json(f, json_object_array_get_idx(val, i),
                                    arr + i * value_size(f));
                if (r >= 0)
                    *count = i + 1;
            }
        } else {
            r = value_from_json(f, val, base);
        }
        if (r < 0)
            break;
    }
    if (r < 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        return r;
    }
    *ret = m;
    return 0;
}

static int
apply(struct driver *d)
{
    json_object *obj = json_object_from_file(d->state_file);
    if (!obj) {
        fprintf(stderr, "dhcp-driver: cannot parse '%s'\n", d->state_file);
        return -EINVAL;
    }
    ProtobufCMessage *m = NULL;
    int r = from_json(&yun__host_network_state__descriptor, obj, &m);
    json_object_put(obj);
    if (r < 0) {
        fprintf(stderr, "dhcp-driver: bad state in '%s'\n", d->state_file);
        return r;
    }
    Yun__HostNetworkState *st = (Yun__HostNetworkState *)m;
    int r1 = dhcp_apply(d->dhcp, st, d->host);
    int r2 = metadata_apply(d->md, st, d->host);
    char path[4096], gen[32];
    (void)snprintf(path, sizeof path, "%s/applied", d->state_dir);
    int n = snprintf(gen, sizeof gen, "%llu %d %d\n", (unsigned long long)st->generation, r1,
                     r2);
    (void)yun_write_file_atomic(path, gen, (size_t)n, 0644);
    protobuf_c_message_free_unpacked(m, NULL);
    return r1 < 0 ? r1 : r2;
}

static void
on_hup(struct yun_loop *loop, int sig, void *data)
{
    (void)apply(data);
}

static void
on_term(struct yun_loop *loop, int sig, void *data)
{
    yun_loop_quit(loop, 0);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "state-dir", required_argument, NULL, 'd' },
        { "state", required_argument, NULL, 's' },
        { "host", required_argument, NULL, 'H' },
        { "dnsmasq", required_argument, NULL, 'm' },
        { "stop-all", no_argument, NULL, 'S' },
        {},
    };
    struct driver d = { .host = "host1" };
    const char *dnsmasq = "/usr/sbin/dnsmasq";
    bool stop_all = false;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
        switch (c) {
        case 'd':
            d.state_dir = optarg;
            break;
        case 's':
            d.state_file = optarg;
            break;
        case 'H':
            d.host = optarg;
            break;
        case 'm':
            dnsmasq = optarg;
            break;
        case 'S':
            stop_all = true;
            break;
        default:
            return 2;
        }
    }
    if (!d.state_dir || (!d.state_file && !stop_all)) {
        fprintf(stderr, "usage: dhcp-driver --state-dir DIR (--state FILE | --stop-all) "
                        "[--host ID] [--dnsmasq PATH]\n");
        return 2;
    }
    yun_log_max_level = YUN_LOG_DEBUG;
    yun_log_open("dhcp-driver", NULL);
    signal(SIGPIPE, SIG_IGN);
    int r = yun_loop_new(&d.loop);
    if (r >= 0)
        r = dhcp_set_new(d.loop, d.state_dir, dnsmasq, &d.dhcp);
    if (r >= 0)
        r = metadata_new(d.loop, &d.md);
    if (r >= 0 && stop_all) {
        r = dhcp_set_stop_all(d.dhcp);
    } else if (r >= 0) {
        (void)yun_loop_add_signal(d.loop, SIGHUP, on_hup, &d);
        (void)yun_loop_add_signal(d.loop, SIGTERM, on_term, &d);
        (void)yun_loop_add_signal(d.loop, SIGINT, on_term, &d);
        (void)apply(&d);
        r = yun_loop_run(d.loop);
    }
    d.md = metadata_free(d.md);
    d.dhcp = dhcp_set_free(d.dhcp);
    d.loop = yun_loop_free(d.loop);
    yun_log_close();
    return r < 0 ? 1 : 0;
}
