/* SPDX-License-Identifier: Apache-2.0
 * bench-image.c: figures for the image service (issue 3). Prints
 *   - this machine's hashing speed for MD5 and SHA-512, which the
 *     scheduler computes over every uploaded byte: `openssl speed` and
 *     in-process EVP on a 1 MiB buffer, each alone and combined as one pass
 *     over the data (1 / (1/md5 + 1/sha512));
 *   - upload and download throughput of a 1 GiB raw image through a real
 *     yun-scheduler on loopback, over the bus in sealed chunks exactly as
 *     `yun image create` and `yun image download` move them (rpc layer, no
 *     terminal, no file written or hashed), with the CPU seconds the
 *     scheduler and the client spent;
 *   - the same through the yun binary itself: `yun image create --file`
 *     and `yun image download --file`, which writes the file and checks
 *     its sha512 (that hashing, ~0.5 GB/s on one core, bounds it);
 *   - upload speed as a fraction of the one-pass hash limit (and of the
 *     two-thread limit, min(md5, sha512), since common/digest.c hashes MD5
 *     on a helper thread), and the targets: upload >= 700 MB/s, download
 *     >= 1.9 GB/s.
 * The image is made on the fly in a temp dir (a 1 MiB random block, its
 * first bytes changed for every MiB) and every run's record is checked
 * against the MD5 and SHA-512 computed while making it.
 * Usage: bench-image [--build DIR] [--size MIB] [--runs N] [--chunk-size BYTES]
 *                    [--depth N] (download chunks in flight, as the CLI: 4)
 * A benchmark, not a test: it asserts nothing but the data's integrity. MB
 * are 10^6 bytes. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "keyfile.h"
#include "rpc.h"
#include "util.h"
#include "identity.pb-c.h"
#include "image.pb-c.h"

#define MIB (1u << 20)

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What to undo on any exit: the scheduler and the temp dir. */
static pid_t sched_pid = -1;
static char temp_dir[64];
static const char *build_dir = ".";

static void
cleanup(void)
{
    if (sched_pid > 0) {
        kill(sched_pid, SIGTERM);
        waitpid(sched_pid, NULL, 0);
        sched_pid = -1;
    }
    if (temp_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", temp_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench-image: could not remove %s\n", temp_dir);
        temp_dir[0] = '\0';
    }
}

static void
die(const char *what, int r)
{
    fprintf(stderr, "bench-image: %s: %s\n", what, r ? yun_strerror(r) : "failed");
    exit(1);
}

/* ---- Hashing speed ---- */

/* MB/s of `openssl speed -evp ALG` on 1 MiB blocks, or 0. */
static double
openssl_speed(const char *alg)
{
    char cmd[256], line[512];
    snprintf(cmd, sizeof cmd, "openssl speed -evp %s -bytes 1048576 -seconds 2 2>/dev/null",
             alg);
    FILE *p = popen(cmd, "r");
    if (!p)
        return 0;
    double kbs = 0;
    size_t n = strlen(alg);
    while (fgets(line, sizeof line, p)) {
        /* "md5             508156.06k": thousands of bytes per second. */
        if (strncmp(line, alg, n) == 0 && line[n] == ' ') {
            char *k = strrchr(line, 'k');
            char *sp = k;
            while (sp && sp > line && sp[-1] != ' ')
                sp--;
            if (k && sp)
                kbs = strtod(sp, NULL);
        }
    }
    pclose(p);
    return kbs * 1000 / 1e6;
}

/* MB/s of in-process EVP over a 1 MiB buffer for about 'secs' seconds:
 * 'a' alone, or 'a' and 'b' both over each block (one pass, one thread). */
static double
evp_speed(const EVP_MD *a, const EVP_MD *b, const uint8_t *buf, double secs)
{
    EVP_MD_CTX *ca = EVP_MD_CTX_new(), *cb = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ca, a, NULL);
    if (b)
        EVP_DigestInit_ex(cb, b, NULL);
    size_t blocks = 0;
    double t0 = now_s(), t;
    do {
        EVP_DigestUpdate(ca, buf, MIB);
        if (b)
            EVP_DigestUpdate(cb, buf, MIB);
        blocks++;
    } while ((t = now_s() - t0) < secs);
    uint8_t md[EVP_MAX_MD_SIZE];
    EVP_DigestFinal_ex(ca, md, NULL);
    EVP_DigestFinal_ex(cb, md, NULL);
    EVP_MD_CTX_free(ca);
    EVP_MD_CTX_free(cb);
    return (double)blocks * MIB / t / 1e6;
}

static double
combine(double a, double b)
{
    return a > 0 && b > 0 ? 1 / (1 / a + 1 / b) : 0;
}

/* ---- The image file ---- */

/* Writes 'mib' MiB to 'path' and returns its MD5 and SHA-512 in hex. */
static void
make_image(const char *path, unsigned mib, char md5_hex[33], char sha_hex[129])
{
    uint8_t *block = malloc(MIB);
    if (!block || RAND_bytes(block, MIB) != 1)
        die("random block", 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path, -errno);
    EVP_MD_CTX *cm = EVP_MD_CTX_new(), *cs = EVP_MD_CTX_new();
    EVP_DigestInit_ex(cm, EVP_md5(), NULL);
    EVP_DigestInit_ex(cs, EVP_sha512(), NULL);
    for (unsigned i = 0; i < mib; i++) {
        memcpy(block, &i, sizeof i); /* no two MiB alike */
        if (write(fd, block, MIB) != (ssize_t)MIB)
            die("write the image file", -errno);
        EVP_DigestUpdate(cm, block, MIB);
        EVP_DigestUpdate(cs, block, MIB);
    }
    close(fd);
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned len;
    EVP_DigestFinal_ex(cm, md, &len);
    yun_hex_encode(md, len, md5_hex);
    EVP_DigestFinal_ex(cs, md, &len);
    yun_hex_encode(md, len, sha_hex);
    EVP_MD_CTX_free(cm);
    EVP_MD_CTX_free(cs);
    free(block);
}

/* ---- The scheduler ---- */

static int
run(const char *cmd)
{
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
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

/* CPU seconds (user + system) 'pid' has used. */
static double
cpu_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* After "pid (comm)": state, then fields 4..; utime and stime are 14, 15. */
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
        return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

static double
self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static struct yun_bus_client *
connect_client(const char *key_file, int timeout_ms, size_t max_body)
{
    struct yun_peer_key k = { 0 };
    int r = yun_peer_key_load(key_file, &k);
    if (r < 0)
        die(key_file, r);
    struct yun_bus_client_options o = { .url = k.scheduler, .self_id = k.id, .key_id = k.id,
                                        .key_epoch = k.epoch, .key = &k.key,
                                        .timeout_ms = timeout_ms, .max_body = max_body };
    struct yun_bus_client *c = NULL;
    r = yun_bus_client_new(&o, &c);
    yun_peer_key_done(&k);
    if (r < 0)
        die("connect", r);
    return c;
}

/* The admin's token, as `yun login` keeps it: every image call sends it. */
static char *token;

static int
call(struct yun_bus_client *c, Yun__Op op, const ProtobufCMessage *q,
     const ProtobufCMessageDescriptor *d, ProtobufCMessage **ret)
{
    _cleanup_free_ char *msg = NULL;
    int r = yun_rpc_call_full(c, NULL, token, token ? strlen(token) : 0, op, q, d, ret, &msg);
    if (r < 0)
        fprintf(stderr, "bench-image: op %d: %s (%s)\n", (int)op, msg ? msg : "",
                yun_errname(r));
    return r;
}

struct result {
    double up, down;              /* MB/s */
    double cli_up, cli_down;      /* MB/s of `yun image create --file`, `yun image download` */
    double commit_ms;             /* the last upload chunk: verify and make durable */
    double up_sched_cpu, up_self_cpu, down_sched_cpu, down_self_cpu; /* seconds */
};

/* One round: create, upload the file in chunks, check the record, download
 * it all, delete. */
static int
one_run(struct yun_bus_client *c, pid_t sched, int run_no, const char *path, uint64_t size,
        size_t chunk, unsigned depth, const char *md5_hex, const char *sha_hex, struct result *res)
{
    char name[32];
    snprintf(name, sizeof name, "bench-%d", run_no);
    Yun__ImageCreateRequest cq = YUN__IMAGE_CREATE_REQUEST__INIT;
    cq.name = name;
    cq.disk_format = (char *)"raw";
    ProtobufCMessage *m = NULL;
    if (call(c, YUN__OP__OP_IMAGE_CREATE, &cq.base, &yun__image_reply__descriptor, &m) < 0)
        return -1;
    char id[64];
    snprintf(id, sizeof id, "%s", ((Yun__ImageReply *)m)->image->id);
    protobuf_c_message_free_unpacked(m, NULL);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *buf = malloc(chunk);
    if (fd < 0 || !buf)
        die(path, -errno);
    double s0 = cpu_of(sched), c0 = self_cpu(), t0 = now_s();
    Yun__ImageUploadReply *last = NULL;
    for (uint64_t off = 0; off < size;) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        if (pread(fd, buf, n, (off_t)off) != (ssize_t)n)
            die("read the image file", -errno);
        Yun__ImageUploadRequest q = YUN__IMAGE_UPLOAD_REQUEST__INIT;
        q.image = id;
        q.offset = off;
        q.data.data = buf;
        q.data.len = n;
        q.last = off + n == size;
        q.expected_size = size;
        double tc = now_s();
        if (call(c, YUN__OP__OP_IMAGE_UPLOAD, &q.base, &yun__image_upload_reply__descriptor,
                 &m) < 0)
            return -1;
        if (q.last)
            res->commit_ms = (now_s() - tc) * 1e3;
        off += n;
        if (q.last)
            last = (Yun__ImageUploadReply *)m;
        else
            protobuf_c_message_free_unpacked(m, NULL);
    }
    double t1 = now_s();
    res->up = (double)size / (t1 - t0) / 1e6;
    res->up_sched_cpu = cpu_of(sched) - s0;
    res->up_self_cpu = self_cpu() - c0;
    close(fd);
    const Yun__ImageRecord *im = last ? last->image : NULL;
    if (!im || strcmp(im->status, "active") != 0 || im->size != size ||
        strcasecmp(im->checksum, md5_hex) != 0 || strcasecmp(im->os_hash_value, sha_hex) != 0) {
        fprintf(stderr, "bench-image: the uploaded image is not what was sent: status %s, "
                        "size %llu, md5 %s, sha512 %.16s...\n",
                im ? im->status : "?", im ? (unsigned long long)im->size : 0ULL,
                im ? im->checksum : "?", im ? im->os_hash_value : "?");
        return -1;
    }
    protobuf_c_message_free_unpacked(&last->base, NULL);

    /* As `yun image download` does: 'depth' chunks in flight, one per
     * REQ socket, taken back in offset order (slot k % depth). */
    struct yun_rpc_window *win = NULL;
    int r = yun_rpc_window_new(c, depth, 60000, &win);
    if (r < 0)
        die("window", r);
    uint64_t got = 0, next = 0;
    uint64_t nchunks = (size + chunk - 1) / chunk;
    s0 = cpu_of(sched);
    c0 = self_cpu();
    t0 = now_s();
    for (uint64_t k = 0; k < nchunks && k < depth; k++, next += chunk) {
        Yun__ImageDownloadRequest q = YUN__IMAGE_DOWNLOAD_REQUEST__INIT;
        q.image = id;
        q.offset = next;
        q.length = (uint32_t)chunk;
        r = yun_rpc_window_send(win, (unsigned)k, token, strlen(token),
                                YUN__OP__OP_IMAGE_DOWNLOAD, &q.base);
        if (r < 0)
            die("download", r);
    }
    for (uint64_t k = 0; k < nchunks; k++) {
        unsigned slot = (unsigned)(k % depth);
        _cleanup_free_ char *msg = NULL;
        r = yun_rpc_window_recv(win, slot, &yun__image_download_reply__descriptor, &m, &msg);
        if (r < 0) {
            fprintf(stderr, "bench-image: download: %s\n", msg ? msg : yun_strerror(r));
            return -1;
        }
        Yun__ImageDownloadReply *y = (Yun__ImageDownloadReply *)m;
        if (y->offset != got || (y->data.len == 0 && !y->eof)) {
            fprintf(stderr, "bench-image: download went wrong at offset %llu\n",
                    (unsigned long long)got);
            return -1;
        }
        got += y->data.len;
        protobuf_c_message_free_unpacked(m, NULL);
        if (next < size) {
            Yun__ImageDownloadRequest q = YUN__IMAGE_DOWNLOAD_REQUEST__INIT;
            q.image = id;
            q.offset = next;
            q.length = (uint32_t)chunk;
            r = yun_rpc_window_send(win, slot, token, strlen(token),
                                    YUN__OP__OP_IMAGE_DOWNLOAD, &q.base);
            if (r < 0)
                die("download", r);
            next += chunk;
        }
    }
    win = yun_rpc_window_free(win);
    t1 = now_s();
    res->down = (double)got / (t1 - t0) / 1e6;
    res->down_sched_cpu = cpu_of(sched) - s0;
    res->down_self_cpu = self_cpu() - c0;
    if (got != size) {
        fprintf(stderr, "bench-image: downloaded %llu of %llu bytes\n",
                (unsigned long long)got, (unsigned long long)size);
        return -1;
    }
    free(buf);

    /* The same through the yun CLI, as a user runs it: a download to a
     * file, checked against the image's sha512 by the CLI; an upload of
     * the same file as a new image (create, then the chunks). */
    char cmd[2048], out[600];
    snprintf(out, sizeof out, "%s/out.raw", temp_dir);
    snprintf(cmd, sizeof cmd, "%s/cli/yun --timeout 120 image download %s --file %s",
             build_dir, id, out);
    t0 = now_s();
    if (run(cmd) != 0)
        return -1;
    res->cli_down = (double)size / (now_s() - t0) / 1e6;
    (void)unlink(out);
    snprintf(cmd, sizeof cmd,
             "%s/cli/yun --timeout 120 -f value -c id image create --disk-format raw "
             "--file %s cli-%d >/dev/null", build_dir, path, run_no);
    t0 = now_s();
    if (run(cmd) != 0)
        return -1;
    res->cli_up = (double)size / (now_s() - t0) / 1e6;
    snprintf(cmd, sizeof cmd, "%s/cli/yun image delete cli-%d", build_dir, run_no);
    if (run(cmd) != 0)
        return -1;

    Yun__ImageRef dq = YUN__IMAGE_REF__INIT;
    dq.image = id;
    if (call(c, YUN__OP__OP_IMAGE_DELETE, &dq.base, NULL, NULL) < 0)
        return -1;
    return 0;
}

static int
cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int
main(int argc, char **argv)
{
    const char *build = getenv("YUN_BUILD_DIR");
    unsigned mib = 1024;
    int runs = 3;
    uint32_t chunk = MIB;
    unsigned depth = 4;
    static const struct option opts[] = {
        { "depth", required_argument, NULL, 'd' },
        { "build", required_argument, NULL, 'b' },
        { "size", required_argument, NULL, 's' },
        { "runs", required_argument, NULL, 'r' },
        { "chunk-size", required_argument, NULL, 'c' },
        {},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
        uint32_t v = 0;
        if (c == 'b')
            build = optarg;
        else if (c == 's' && yun_safe_atou32(optarg, &v) == 0 && v > 0)
            mib = v;
        else if (c == 'r' && yun_safe_atou32(optarg, &v) == 0 && v > 0 && v <= 100)
            runs = (int)v;
        else if (c == 'c' && yun_safe_atou32(optarg, &v) == 0 && v >= 4096)
            chunk = v;
        else if (c == 'd' && yun_safe_atou32(optarg, &v) == 0 && v >= 1 && v <= 64)
            depth = v;
        else {
            fprintf(stderr, "Usage: bench-image [--build DIR] [--size MIB] [--runs N] "
                            "[--chunk-size BYTES] [--depth N]\n");
            return 2;
        }
    }
    if (!build)
        build = ".";
    build_dir = build;
    signal(SIGPIPE, SIG_IGN);
    /* As the yun CLI does (cli/main.c): 1 MiB message buffers stay on the
     * heap instead of a fresh mmap, and its page faults, per chunk. */
    (void)mallopt(M_MMAP_THRESHOLD, 64 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);

    printf("== hashing speed (MB/s, 1 MiB blocks, one thread)\n");
    double os_md5 = openssl_speed("md5"), os_sha = openssl_speed("sha512");
    double os_both = combine(os_md5, os_sha);
    uint8_t *block = malloc(MIB);
    if (!block || RAND_bytes(block, MIB) != 1)
        die("random block", 0);
    double ev_md5 = evp_speed(EVP_md5(), NULL, block, 1);
    double ev_sha = evp_speed(EVP_sha512(), NULL, block, 1);
    double ev_both = evp_speed(EVP_md5(), EVP_sha512(), block, 2);
    free(block);
    printf("openssl speed:   md5 %7.1f   sha512 %7.1f   md5+sha512 one pass %7.1f (computed)\n",
           os_md5, os_sha, os_both);
    printf("in-process EVP:  md5 %7.1f   sha512 %7.1f   md5+sha512 one pass %7.1f (measured; "
           "%.1f computed)\n",
           ev_md5, ev_sha, ev_both, combine(ev_md5, ev_sha));

    char dir[] = "/tmp/yun-bench-image-XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp", -errno);
    snprintf(temp_dir, sizeof temp_dir, "%s", dir);
    atexit(cleanup);
    char path[600], conf[600], log[600], key[600], pw[600], cmd[4096];
    snprintf(path, sizeof path, "%s/image.raw", dir);
    snprintf(conf, sizeof conf, "%s/scheduler.conf", dir);
    snprintf(log, sizeof log, "%s/scheduler.log", dir);
    snprintf(key, sizeof key, "%s/bench.key", dir);
    snprintf(pw, sizeof pw, "%s/admin.password", dir);
    uint64_t size = (uint64_t)mib * MIB;
    char md5_hex[33], sha_hex[129];
    double t0 = now_s();
    make_image(path, mib, md5_hex, sha_hex);
    printf("== image: %u MiB raw in %s, made and hashed in %.1f s\n", mib, dir, now_s() - t0);

    /* The bus must carry a chunk plus its framing. */
    uint32_t max_msg = chunk + 4096 < (4u << 20) ? (4u << 20) : chunk + (1u << 20);
    int port = 30000 + getpid() % 20000;
    FILE *f = fopen(conf, "we");
    if (!f)
        die(conf, -errno);
    fprintf(f,
            "[scheduler]\nbus_url = tcp://127.0.0.1:%d\nstate_dir = %s/sched\n"
            "secret_file = %s/cluster.key\nlog_file = %s\nlog_level = notice\n"
            "[bus]\nmax_message_size = %u\n[images]\nchunk_size = %u\n"
            "max_virtual_size_gb = %u\n",
            port, dir, dir, log, max_msg, chunk, mib / 1024 + 2);
    fclose(f);
    f = fopen(pw, "we");
    if (!f)
        die(pw, -errno);
    fprintf(f, "bench-%d-password\n", (int)getpid());
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s/scheduler/yun-scheduler -c %s init --admin-password-file %s >/dev/null", build,
             conf, pw);
    if (run(cmd) != 0)
        die("yun-scheduler init", 0);
    snprintf(cmd, sizeof cmd,
             "%s/scheduler/yun-scheduler -c %s issue-key --operator bench --out %s 2>/dev/null",
             build, conf, key);
    if (run(cmd) != 0)
        die("yun-scheduler issue-key", 0);
    char sched_bin[600];
    snprintf(sched_bin, sizeof sched_bin, "%s/scheduler/yun-scheduler", build);
    char *sargv[] = { sched_bin, "-c", conf, NULL };
    pid_t sched = spawn(sargv, log);
    sched_pid = sched;

    /* Wait until it serves, or died. */
    struct yun_bus_client *cl = connect_client(key, 500, max_msg);
    for (int i = 0;; i++) {
        Yun__PingRequest q = YUN__PING_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        if (yun_rpc_call(cl, YUN__OP__OP_PING, &q.base, &yun__ping_reply__descriptor, &m,
                         NULL) == 0) {
            protobuf_c_message_free_unpacked(m, NULL);
            break;
        }
        if (waitpid(sched, NULL, WNOHANG) == sched) {
            sched_pid = -1;
            snprintf(cmd, sizeof cmd, "tail -5 %s >&2", log);
            run(cmd);
            die("yun-scheduler exited", 0);
        }
        if (i == 20)
            die("the scheduler does not answer", YUN_E_UNREACHABLE);
    }
    /* Log in as the admin, as `yun login` does: image calls need a token. */
    {
        char password[64];
        snprintf(password, sizeof password, "bench-%d-password", (int)getpid());
        Yun__LoginRequest q = YUN__LOGIN_REQUEST__INIT;
        q.user = (char *)"admin";
        q.password = password;
        ProtobufCMessage *m = NULL;
        yun_bus_client_free(cl);
        cl = connect_client(key, 20000, max_msg);
        if (call(cl, YUN__OP__OP_LOGIN, &q.base, &yun__login_reply__descriptor, &m) < 0)
            die("login", 0);
        token = strdup(((Yun__LoginReply *)m)->token);
        protobuf_c_message_free_unpacked(m, NULL);
        if (!token)
            die("login", -ENOMEM);
    }
    /* The CLI logs in once and keeps its token in its own config dir. */
    char cli_dir[600];
    snprintf(cli_dir, sizeof cli_dir, "%s/cli", dir);
    setenv("YUN_CONFIG_DIR", cli_dir, 1);
    setenv("YUN_KEY_FILE", key, 1);
    snprintf(cmd, sizeof cmd, "%s/cli/yun login --user admin --password-file %s >/dev/null",
             build, pw);
    if (run(cmd) != 0)
        die("yun login", 0);
    yun_bus_client_free(cl);
    /* The last chunk of an upload verifies and makes the image durable. */
    cl = connect_client(key, 60000, max_msg);

    printf("== %u MiB through yun-scheduler on loopback, %u-byte chunks, %u downloads in "
           "flight (MB/s; CPU s)\n", mib, chunk, depth);
    double *ups = calloc((size_t)runs, sizeof *ups), *downs = calloc((size_t)runs, sizeof *downs);
    double *cli_ups = calloc((size_t)runs, sizeof *ups);
    double *cli_downs = calloc((size_t)runs, sizeof *downs);
    int ok = 0, rc = 0;
    for (int i = 0; i < runs; i++) {
        struct result res = { 0 };
        if (one_run(cl, sched, i, path, size, chunk, depth, md5_hex, sha_hex, &res) < 0) {
            rc = 1;
            break;
        }
        printf("run %d: upload %7.1f MB/s (scheduler %.2f, client %.2f CPU s; last chunk "
               "%.0f ms)   download %7.1f MB/s (scheduler %.2f, client %.2f CPU s)\n"
               "       yun CLI: image create --file %7.1f MB/s   image download --file "
               "(sha512 checked) %7.1f MB/s\n",
               i + 1, res.up, res.up_sched_cpu, res.up_self_cpu, res.commit_ms, res.down,
               res.down_sched_cpu, res.down_self_cpu, res.cli_up, res.cli_down);
        fflush(stdout);
        ups[ok] = res.up;
        downs[ok] = res.down;
        cli_ups[ok] = res.cli_up;
        cli_downs[ok] = res.cli_down;
        ok++;
    }
    if (ok > 0) {
        double up = median(ups, ok), down = median(downs, ok);
        printf("== summary (median of %d)\n", ok);
        printf("upload   %7.1f MB/s   target >= 700 MB/s:  %s\n", up,
               up >= 700 ? "met" : "NOT met");
        printf("download %7.1f MB/s   target >= 1900 MB/s: %s\n", down,
               down >= 1900 ? "met" : "NOT met");
        printf("yun CLI: image create --file %7.1f MB/s, image download --file (sha512 "
               "checked) %7.1f MB/s\n", median(cli_ups, ok), median(cli_downs, ok));
        if (os_both > 0)
            printf("upload / one-pass md5+sha512 limit (openssl speed, %.1f MB/s): %.2f\n",
                   os_both, up / os_both);
        printf("upload / one-pass md5+sha512 limit (in-process EVP, %.1f MB/s): %.2f\n",
               ev_both, up / ev_both);
        /* common/digest.c runs MD5 on a helper thread beside SHA-512: with
         * two free cores the slower of the two bounds the rate instead. */
        double par = os_md5 > 0 && os_sha > 0 ? (os_md5 < os_sha ? os_md5 : os_sha)
                                              : (ev_md5 < ev_sha ? ev_md5 : ev_sha);
        printf("upload / two-thread limit min(md5, sha512) (%.1f MB/s): %.2f\n", par,
               up / par);
    }
    free(ups);
    free(downs);
    free(cli_ups);
    free(cli_downs);

    yun_bus_client_free(cl);
    if (rc) {
        snprintf(cmd, sizeof cmd, "tail -5 %s >&2", log);
        run(cmd);
    }
    return rc; /* cleanup() stops the scheduler and removes the temp dir */
}
