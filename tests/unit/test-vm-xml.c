/* SPDX-License-Identifier: Apache-2.0
 * test-vm-xml.c: domain XML for instances. Golden files in
 * tests/data/vm-xml/ (YUN_TEST_REGENERATE=1 rewrites them for review), and
 * every generated document must be accepted by libvirt's test driver,
 * which parses it with the same code as qemu:///system. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "cleanup.h"
#include "util.h"
#include "vm-xml.h"

static const char *const uuid = "6f1c0e6a-3a4b-4c2d-9e8f-0123456789ab";

static void
check_golden(const char *name, const char *xml)
{
    const char *src = getenv("YUN_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/vm-xml/%s.xml", src ? src : ".", name);
    if (getenv("YUN_TEST_REGENERATE")) {
        assert_int_equal(yun_write_file_atomic(path, xml, strlen(xml), 0644), 0);
        return;
    }
    _cleanup_free_ char *want = NULL;
    int r = yun_read_file(path, 1 << 20, &want, NULL);
    if (r < 0)
        fail_msg("cannot read golden file %s: %s (run with YUN_TEST_REGENERATE=1)", path,
                 strerror(-r));
    if (strcmp(want, xml) != 0)
        fail_msg("%s differs from the golden file %s:\n%s", name, path, xml);
}

/* libvirt's test driver parses and validates domain XML like the QEMU
 * driver's front end does; defining it proves the document is sound. */
static void
check_libvirt_accepts(const char *xml)
{
    virConnectPtr conn = virConnectOpen("test:///default");
    assert_non_null(conn);
    virDomainPtr dom = virDomainDefineXML(conn, xml);
    if (!dom)
        fail_msg("libvirt refused the XML: %s\n%s", virGetLastErrorMessage(), xml);
    char *back = virDomainGetXMLDesc(dom, 0);
    assert_non_null(back);
    /* The explicit format of the disk must survive libvirt's parsing. */
    assert_non_null(strstr(back, "type='qcow2'"));
    free(back);
    assert_int_equal(virDomainUndefine(dom), 0);
    virDomainFree(dom);
    virConnectClose(conn);

    /* And libvirt's RelaxNG schema, when its validator is installed. */
    if (access("/usr/bin/virt-xml-validate", X_OK) != 0)
        return;
    const char *dir = getenv("YUN_TEST_DIR");
    char path[4096], cmd[4200];
    snprintf(path, sizeof path, "%s/vm-xml-%d.xml", dir && *dir ? dir : "/tmp", (int)getpid());
    if (dir && *dir)
        assert_int_equal(yun_mkdir_p(dir, 0755), 0);
    assert_int_equal(yun_write_file_atomic(path, xml, strlen(xml), 0644), 0);
    snprintf(cmd, sizeof cmd, "virt-xml-validate '%s' domain >/dev/null", path);
    int r = system(cmd);
    unlink(path);
    if (r != 0)
        fail_msg("virt-xml-validate refused the XML:\n%s", xml);
}

static struct agent_vm_spec
base_spec(void)
{
    return (struct agent_vm_spec){
        .id = uuid,
        .name = "web1",
        .project = "demo",
        .virt_type = "qemu",
        .arch = "x86_64",
        .vcpus = 1,
        .ram_mb = 128,
        .disk_path = "/var/lib/yun/agent/instances/6f1c/disk",
        .disk_format = "qcow2",
        .backing_path = "/var/lib/yun/agent/images/ab12",
        .backing_format = "raw",
        .console_log = "/var/lib/yun/agent/instances/6f1c/console.log",
    };
}

static void
test_disk_boot(void **state)
{
    struct agent_vm_spec s = base_spec();
    _cleanup_free_ char *xml = NULL;
    assert_int_equal(agent_vm_xml_build(&s, &xml), 0);
    check_golden("disk-boot", xml);
    check_libvirt_accepts(xml);
}

static void
test_kernel_boot_with_nic(void **state)
{
    struct agent_vm_nic nic = { .mac = "fa:16:3e:00:00:01", .tap = "tapab12cd34" };
    struct agent_vm_spec s = base_spec();
    s.kernel_path = "/var/lib/yun/agent/images/k1";
    s.initrd_path = "/var/lib/yun/agent/images/r1";
    s.cmdline = "console=ttyS0 yun.hostname=web1";
    s.nics = &nic;
    s.n_nics = 1;
    s.vcpus = 2;
    s.ram_mb = 256;
    _cleanup_free_ char *xml = NULL;
    assert_int_equal(agent_vm_xml_build(&s, &xml), 0);
    check_golden("kernel-boot", xml);
    check_libvirt_accepts(xml);
}

static void
test_kvm_uses_host_cpu(void **state)
{
    struct agent_vm_spec s = base_spec();
    s.virt_type = "kvm";
    _cleanup_free_ char *xml = NULL;
    assert_int_equal(agent_vm_xml_build(&s, &xml), 0);
    assert_non_null(strstr(xml, "<domain type=\"kvm\">"));
    assert_non_null(strstr(xml, "host-passthrough"));
}

static void
test_values_are_escaped(void **state)
{
    struct agent_vm_spec s = base_spec();
    s.name = "a<b>&\"c'</title><evil/>";
    _cleanup_free_ char *xml = NULL;
    assert_int_equal(agent_vm_xml_build(&s, &xml), 0);
    assert_null(strstr(xml, "<evil/>"));
    assert_non_null(strstr(xml, "a&lt;b&gt;&amp;"));
    check_libvirt_accepts(xml);
}

static void
test_invalid_specs(void **state)
{
    char *xml = NULL;
    struct agent_vm_spec s = base_spec();
    s.id = "not-a-uuid";
    assert_int_equal(agent_vm_xml_build(&s, &xml), -EINVAL);
    s = base_spec();
    s.virt_type = "xen";
    assert_int_equal(agent_vm_xml_build(&s, &xml), -EINVAL);
    s = base_spec();
    s.vcpus = 0;
    assert_int_equal(agent_vm_xml_build(&s, &xml), -EINVAL);
    s = base_spec();
    s.backing_format = NULL;
    assert_int_equal(agent_vm_xml_build(&s, &xml), -EINVAL);
    s = base_spec();
    s.kernel_path = NULL;
    s.initrd_path = "/x";
    assert_int_equal(agent_vm_xml_build(&s, &xml), -EINVAL);
    assert_null(xml);
}

int
main(void)
{
    /* libvirt prints its errors to stderr by default; the test reports. */
    virSetErrorFunc(NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_boot),
        cmocka_unit_test(test_kernel_boot_with_nic),
        cmocka_unit_test(test_kvm_uses_host_cpu),
        cmocka_unit_test(test_values_are_escaped),
        cmocka_unit_test(test_invalid_specs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
