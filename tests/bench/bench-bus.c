/* SPDX-License-Identifier: Apache-2.0
 * bench-bus.c: figures for the bus (issue: foundation). Prints
 *   - the cost of seal + open per message for 256 B and 64 KiB bodies;
 *   - sealed request/response round trips per second and p50/p99 latency
 *     through a real yun-scheduler on loopback, for 1 and 8 concurrent
 *     clients (each its own operator key and REQ socket), PING requests
 *     going through envelope checks, the replay cache and dispatch;
 *   - the resident memory of an idle scheduler and an idle agent, and the
 *     agent's floor: tests/bench/libvirt-floor, which links the same
 *     libraries and only holds a libvirt connection.
 * Usage: bench-bus [--build DIR] [--seconds N] [--libvirt-uri URI]
 * A benchmark, not a test: it asserts nothing and prints its figures. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "cleanup.h"
#include "envelope.h"
#include "err.h"
#include "keyfile.h"
#include "rpc.h"
#include "seal.h"
#include "util.h"

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
bench_seal(size_t size)
{
    struct yun_key key;
    uint8_t secret[32] = { 1 };
    yun_key_derive(secret, sizeof secret, "bench", 1, &key);
    uint8_t *body = calloc(1, size);
    uint8_t *out = malloc(size + 1);
    struct yun_envelope_out o = { .sender = "bench", .key_id = "bench", .key_epoch = 1,
                                  .request_id = "0123456789abcdef" };
    int n = size > 4096 ? 20000 : 400000;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        uint8_t *msg = NULL, *plain = NULL;
        size_t msg_size, plain_size;
        struct yun_envelope_in in;
        if (yun_envelope_seal(&key, &o, body, size, 1 << 20, &msg, &msg_size) < 0 ||
            yun_envelope_parse(msg, msg_size, 1 << 20, &in) < 0 ||
            yun_envelope_open(&in, &key, yun_wall_us(), 60000000, &plain, &plain_size) < 0) {
            fprintf(stderr, "seal/open failed\n");
            exit(1);
        }
        yun_envelope_in_done(&in);
        free(msg);
        free(plain);
    }
    double per = (now_s() - t0) / n * 1e6;
    printf("seal+open (envelope, %6zu B body): %8.2f us per message\n", size, per);

    /* The bare AEAD, without protobuf framing and allocation. */
    uint8_t nonce[YUN_NONCE_SIZE] = { 0 };
    uint8_t *sealed = malloc(size + YUN_TAG_SIZE);
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        nonce[0] = (uint8_t)i;
        yun_seal(&key, nonce, "aad", 3, body, size, sealed);
        if (yun_open(&key, nonce, "aad", 3, sealed, size + YUN_TAG_SIZE, out) < 0)
            exit(1);
    }
    per = (now_s() - t0) / n * 1e6;
    printf("seal+open (AES-256-GCM only, %6zu B): %8.2f us per message\n", size, per);
    free(body);
    free(out);
    free(sealed);
}

struct client_arg {
    const char *key_file;
    double seconds;
    double *lat;     /* latencies in µs */
    size_t n, cap;
    int errors;
    pthread_barrier_t *start;
};

static void *
client_main(void *p)
{
    struct client_arg *a = p;
    struct yun_peer_key k = { 0 };
    if (yun_peer_key_load(a->key_file, &k) < 0) {
        a->errors++;
        pthread_barrier_wait(a->start);
        return NULL;
    }
    struct yun_bus_client_options o = { .url = k.scheduler, .self_id = k.id, .key_id = k.id,
                                        .key_epoch = k.epoch, .key = &k.key, .timeout_ms = 5000 };
    struct yun_bus_client *c = NULL;
    int r = yun_bus_client_new(&o, &c);
    yun_peer_key_done(&k);
    pthread_barrier_wait(a->start);
    if (r < 0) {
        a->errors++;
        return NULL;
    }
    Yun__PingRequest q = YUN__PING_REQUEST__INIT;
    uint8_t data[64] = { 0 };
    q.data.data = data;
    q.data.len = sizeof data;
    double end = now_s() + a->seconds;
    while (now_s() < end) {
        double t0 = now_s();
        ProtobufCMessage *m = NULL;
        r = yun_rpc_call(c, YUN__OP__OP_PING, &q.base, &yun__ping_reply__descriptor, &m, NULL);
        double dt = (now_s() - t0) * 1e6;
        if (r < 0) {
            a->errors++;
            continue;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (a->n == a->cap) {
            a->cap = a->cap ? 2 * a->cap : 65536;
            a->lat = realloc(a->lat, a->cap * sizeof *a->lat);
        }
        a->lat[a->n++] = dt;
    }
    yun_bus_client_free(c);
    return NULL;
}

static int
cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static void
bench_round_trips(const char *dir, int clients, double seconds)
{
    struct client_arg *args = calloc((size_t)clients, sizeof *args);
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)clients + 1);
    char (*paths)[512] = calloc((size_t)clients, sizeof *paths);
    for (int i = 0; i < clients; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/op%d.key", dir, i);
        args[i] = (struct client_arg){ .key_file = paths[i], .seconds = seconds, .start = &start };
        pthread_create(&th[i], NULL, client_main, &args[i]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    size_t total = 0;
    int errors = 0;
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    double elapsed = now_s() - t0;
    for (int i = 0; i < clients; i++) {
        total += args[i].n;
        errors += args[i].errors;
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, args[i].lat, args[i].n * sizeof *all);
        k += args[i].n;
        free(args[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_double);
    printf("round trips, %d client%s: %9.0f /s   p50 %7.1f us   p99 %7.1f us   (%zu calls, "
           "%d errors)\n",
           clients, clients > 1 ? "s" : " ", (double)total / elapsed,
           total ? all[total / 2] : 0.0, total ? all[(size_t)((double)total * 0.99)] : 0.0,
           total, errors);
    free(all);
    free(args);
    free(th);
    free(paths);
    pthread_barrier_destroy(&start);
}

static pid_t
spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int
run(const char *cmd)
{
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

/* Resident memory of 'pid' in KiB: total, and the part that is the
 * process's own (anonymous) rather than shared library pages. */
static void
print_memory(const char *what, pid_t pid)
{
    char path[64], line[256];
    long rss = -1, anon = -1, file = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) {
        printf("%s: not running\n", what);
        return;
    }
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "VmRSS: %ld", &rss);
        sscanf(line, "RssAnon: %ld", &anon);
        sscanf(line, "RssFile: %ld", &file);
    }
    fclose(f);
    long pss = -1;
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    f = fopen(path, "re");
    if (f) {
        while (fgets(line, sizeof line, f))
            sscanf(line, "Pss: %ld", &pss);
        fclose(f);
    }
    printf("%s idle resident memory: RSS %.1f MiB (own/anonymous %.1f MiB, shared "
           "libraries %.1f MiB, PSS %.1f MiB)\n",
           what, rss / 1024.0, anon / 1024.0, file / 1024.0, pss / 1024.0);
}

int
main(int argc, char **argv)
{
    const char *build = getenv("YUN_BUILD_DIR");
    const char *uri = "test:///default";
    double seconds = 3;
    static const struct option opts[] = {
        { "build", required_argument, NULL, 'b' },
        { "seconds", required_argument, NULL, 's' },
        { "libvirt-uri", required_argument, NULL, 'u' },
        {},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
        if (c == 'b')
            build = optarg;
        else if (c == 's')
            seconds = atof(optarg);
        else if (c == 'u')
            uri = optarg;
        else
            return 2;
    }
    if (!build)
        build = ".";
    signal(SIGPIPE, SIG_IGN);

    printf("== seal and open\n");
    bench_seal(256);
    bench_seal(64 * 1024);

    char dir[] = "/tmp/yun-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char cmd[4096], conf[600], log[600];
    int port = 30000 + getpid() % 20000;
    snprintf(conf, sizeof conf, "%s/scheduler.conf", dir);
    snprintf(log, sizeof log, "%s/daemons.log", dir);
    FILE *f = fopen(conf, "we");
    fprintf(f,
            "[scheduler]\nbus_url = tcp://127.0.0.1:%d\nstate_dir = %s/sched\n"
            "secret_file = %s/cluster.key\nlog_level = notice\n",
            port, dir, dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s/scheduler/yun-scheduler -c %s init >/dev/null", build, conf);
    if (run(cmd) != 0)
        return 1;
    for (int i = 0; i < 8; i++) {
        snprintf(cmd, sizeof cmd,
                 "%s/scheduler/yun-scheduler -c %s issue-key --operator op%d --out %s/op%d.key "
                 "2>/dev/null", build, conf, i, dir, i);
        if (run(cmd) != 0)
            return 1;
    }
    snprintf(cmd, sizeof cmd,
             "%s/scheduler/yun-scheduler -c %s issue-key --agent benchhost --out %s/agent.key "
             "2>/dev/null", build, conf, dir);
    run(cmd);

    char sched_bin[600], agent_bin[600];
    snprintf(sched_bin, sizeof sched_bin, "%s/scheduler/yun-scheduler", build);
    snprintf(agent_bin, sizeof agent_bin, "%s/agent/yun-agent", build);
    char *sargv[] = { sched_bin, "-c", conf, NULL };
    pid_t sched = spawn(sargv, log);
    usleep(300000);

    char set_key[700], set_state[700], set_uri[700];
    snprintf(set_key, sizeof set_key, "agent.key_file=%s/agent.key", dir);
    snprintf(set_state, sizeof set_state, "agent.state_dir=%s/agent", dir);
    snprintf(set_uri, sizeof set_uri, "libvirt.uri=%s", uri);
    char *aargv[] = { agent_bin, "-c", "/dev/null", "-s", set_key, "-s", set_state,
                      "-s", set_uri, NULL };
    pid_t agent = spawn(aargv, log);

    printf("== sealed round trips through yun-scheduler on loopback (%.0f s each)\n", seconds);
    bench_round_trips(dir, 1, seconds);
    bench_round_trips(dir, 8, seconds);

    /* What the agent cannot go below while it links libvirt: a process
     * with the same libraries and a libvirt connection, doing nothing. */
    char floor_bin[600];
    snprintf(floor_bin, sizeof floor_bin, "%s/tests/bench/libvirt-floor", build);
    char *fargv[] = { floor_bin, (char *)uri, NULL };
    pid_t floor = spawn(fargv, log);

    printf("== memory (after 3 s idle; agent on %s)\n", uri);
    sleep(3);
    print_memory("yun-scheduler", sched);
    print_memory("yun-agent    ", agent);
    print_memory("libvirt floor", floor);
    printf("(libvirt floor: tests/bench/libvirt-floor, a process that links what yun-agent "
           "links and holds a libvirt connection open, nothing else)\n");

    kill(floor, SIGTERM);
    waitpid(floor, NULL, 0);
    kill(agent, SIGTERM);
    kill(sched, SIGTERM);
    waitpid(agent, NULL, 0);
    waitpid(sched, NULL, 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run(cmd);
    return 0;
}
