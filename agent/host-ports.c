/* SPDX-License-Identifier: Apache-2.0
 * host-ports.c: see host-ports.h. */
#include <stddef.h>
#include <string.h>

#include "host-ports.h"

bool
host_ports_is_instance(const Yun__PortRecord *p, const char *host_id, const char *network_id)
{
    return strcmp(p->host_id, host_id) == 0 &&
           (!network_id || strcmp(p->network_id, network_id) == 0) &&
           strncmp(p->device_owner, HOST_PORTS_OWNER_COMPUTE,
                   strlen(HOST_PORTS_OWNER_COMPUTE)) == 0;
}

bool
host_ports_mac_is_valid(const char *s)
{
    if (strlen(s) != 17)
        return false;
    for (int i = 0; i < 17; i++) {
        if (i % 3 == 2 ? s[i] != ':' : !strchr("0123456789abcdef", s[i]) || !s[i])
            return false;
    }
    return true;
}

const Yun__PortRecord *
host_ports_dhcp(const Yun__HostNetworkState *st, const char *host_id, const char *network_id)
{
    for (size_t i = 0; i < st->n_ports; i++) {
        const Yun__PortRecord *p = st->ports[i];
        if (strcmp(p->device_owner, HOST_PORTS_OWNER_DHCP) == 0 &&
            strcmp(p->host_id, host_id) == 0 && strcmp(p->network_id, network_id) == 0)
            return p;
    }
    return NULL;
}

const Yun__PortMetadata *
host_ports_metadata(const Yun__HostNetworkState *st, const char *port_id)
{
    for (size_t i = 0; i < st->n_metadata; i++)
        if (strcmp(st->metadata[i]->port_id, port_id) == 0)
            return st->metadata[i];
    return NULL;
}
