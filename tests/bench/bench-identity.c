/* SPDX-License-Identifier: Apache-2.0
 * bench-identity.c: figures for identity's crypto core (issue 5). Prints
 *   - tokens issued and validated per second on one core (a token with a
 *     user, a project and three roles), and refusals per second of
 *     tampered tokens and garbage;
 *   - the cost of one password hash at the default scrypt cost, next to
 *     bcrypt cost 12 (Keystone's default) measured the same way on the
 *     same machine through libxcrypt's crypt_r(3), interleaved so that a
 *     busy machine slows both alike; then logins per second with one
 *     verifying thread per core;
 *   - with --table, the scrypt costs around the default;
 *   - SSH keypair creation (Ed25519, RSA-3072) and import rates;
 *   - through a real yun-scheduler on loopback (with --build DIR, or
 *     $YUN_BUILD_DIR): requests with a token, validated by the dispatcher
 *     (ping, from 8 clients each with its own operator key and REQ socket,
 *     as bench-bus does), next to the same pings without a token; and
 *     logins per second with the scheduler's 2-thread worker pool and 8
 *     clients logging in at once.
 * Usage: bench-identity [--seconds N] [--table] [--build DIR] [--no-bus]
 * A benchmark, not a test: it asserts nothing and prints its figures. */
#include <crypt.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <ftw.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "err.h"
#include "keyfile.h"
#include "keypair.h"
#include "password.h"
#include "rpc.h"
#include "token.h"
#include "util.h"
#include "identity.pb-c.h"

static double seconds = 2.0;

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what, int r)
{
    fprintf(stderr, "bench-identity: %s: %s\n", what, yun_strerror(r));
    exit(1);
}

static struct yun_token
claims(void)
{
    struct yun_token c = {
        .user_id = "3f2b8c1e-7d4a-4e9b-a1c2-5d6e7f8a9b0c",
        .project_id = "9a8b7c6d-5e4f-4a3b-b2c1-d0e9f8a7b6c5",
        .n_roles = 3,
        .issued_at_us = yun_wall_us(),
        .expires_at_us = yun_wall_us() + 3600ull * 1000000,
    };
    strcpy(c.roles[0], "admin");
    strcpy(c.roles[1], "member");
    strcpy(c.roles[2], "reader");
    return c;
}

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

static void
bench_tokens(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/bench-identity.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        die("mkdtemp", -errno);
    char keydir[4200];
    snprintf(keydir, sizeof keydir, "%s/keys", dir);
    int r = yun_token_keys_create(keydir);
    if (r == 0)
        r = yun_token_keys_rotate(keydir, 3);
    struct yun_token_keys *keys = NULL;
    if (r == 0)
        r = yun_token_keys_load(keydir, &keys);
    if (r < 0)
        die("token keys", r);

    struct yun_token c = claims(), t;
    char *token = NULL;
    long n = 0;
    double t0 = now_s(), dt;
    do {
        for (int i = 0; i < 1000; i++, n++) {
            free(token);
            token = NULL;
            if ((r = yun_token_issue(keys, &c, &token, NULL)) < 0)
                die("issue", r);
        }
    } while ((dt = now_s() - t0) < seconds);
    printf("token issue:     %9.0f/s  %6.2f us each  (%zu characters)\n", n / dt, dt / n * 1e6,
           strlen(token));

    uint64_t now = yun_wall_us();
    n = 0;
    t0 = now_s();
    do {
        for (int i = 0; i < 1000; i++, n++)
            if ((r = yun_token_validate(keys, token, now, &t)) < 0)
                die("validate", r);
    } while ((dt = now_s() - t0) < seconds);
    printf("token validate:  %9.0f/s  %6.2f us each\n", n / dt, dt / n * 1e6);

    /* Refusals: the tag fails (last character changed), or the text is
     * not a token at all. */
    char *bad = strdup(token);
    size_t len = strlen(bad);
    bad[len - 2] = bad[len - 2] == 'A' ? 'B' : 'A';
    n = 0;
    t0 = now_s();
    do {
        for (int i = 0; i < 1000; i++, n++)
            if (yun_token_validate(keys, bad, now, &t) != YUN_E_TOKEN_INVALID)
                die("tampered token accepted", -EINVAL);
    } while ((dt = now_s() - t0) < seconds);
    printf("token tampered:  %9.0f/s  %6.2f us each (refused)\n", n / dt, dt / n * 1e6);
    n = 0;
    t0 = now_s();
    do {
        for (int i = 0; i < 1000; i++, n++)
            if (yun_token_validate(keys, "not-a-token!", now, &t) != YUN_E_TOKEN_INVALID)
                die("garbage accepted", -EINVAL);
    } while ((dt = now_s() - t0) < seconds);
    printf("token garbage:   %9.0f/s  %6.2f us each (refused)\n", n / dt, dt / n * 1e6);

    free(bad);
    free(token);
    yun_token_keys_free(keys);
    (void)nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* One hash at 'p', in milliseconds. */
static double
time_scrypt(const struct yun_password_params *p)
{
    double t0 = now_s();
    char *enc = NULL;
    int r = yun_password_hash_with("correct horse battery staple", p, &enc);
    double ms = (now_s() - t0) * 1e3;
    if (r < 0)
        die("hash", r);
    free(enc);
    return ms;
}

static double
time_bcrypt12(void)
{
    static struct crypt_data data; /* 32 KiB: not on the stack */
    double t0 = now_s();
    /* A fixed, valid bcrypt setting: cost 12, 22 salt characters. */
    const char *h = crypt_r("correct horse battery staple", "$2b$12$PnUTkUvsnvITiMfCiOaQQw", &data);
    double ms = (now_s() - t0) * 1e3;
    if (!h || h[0] == '*')
        return -1;
    return ms;
}

static double
min_d(double a, double b)
{
    return a < b ? a : b;
}

static void
bench_password_cost(void)
{
    const struct yun_password_params *d = &yun_password_default_params;
    double scrypt = 1e9, bcrypt = 1e9;
    for (int i = 0; i < 5; i++) {
        scrypt = min_d(scrypt, time_scrypt(d));
        double b = time_bcrypt12();
        if (b < 0) {
            bcrypt = -1;
            break;
        }
        bcrypt = min_d(bcrypt, b);
    }
    printf("password hash:   scrypt ln=%u r=%u p=%u (%u MiB): %.0f ms (best of 5)\n", d->ln,
           d->r, d->p, (128u * d->r << d->ln) >> 20, scrypt);
    if (bcrypt < 0)
        printf("                 bcrypt cost 12: not available from crypt_r(3) here\n");
    else
        printf("                 bcrypt cost 12 (4 KiB):  %.0f ms (best of 5, interleaved): "
               "scrypt costs %.2fx bcrypt-12\n",
               bcrypt, scrypt / bcrypt);
}

struct login_worker {
    pthread_t thread;
    const char *encoded;
    double until;
    long done;
};

static void *
login_thread(void *arg)
{
    struct login_worker *w = arg;
    while (now_s() < w->until) {
        int r = yun_password_verify("correct horse battery staple", w->encoded);
        if (r < 0)
            die("verify", r);
        w->done++;
    }
    return NULL;
}

static void
bench_logins(void)
{
    char *enc = NULL;
    int r = yun_password_hash("correct horse battery staple", &enc);
    if (r < 0)
        die("hash", r);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    /* One thread, then one per core. */
    for (long n = 1; n <= cores && n <= 64; n = n == cores ? n + 1 : cores) {
        struct login_worker w[64];
        double t0 = now_s(), span = seconds < 3 ? 3 : seconds;
        for (long i = 0; i < n; i++) {
            w[i] = (struct login_worker){ .encoded = enc, .until = t0 + span };
            if (pthread_create(&w[i].thread, NULL, login_thread, &w[i]) != 0)
                die("pthread_create", -EAGAIN);
        }
        long done = 0;
        for (long i = 0; i < n; i++) {
            pthread_join(w[i].thread, NULL);
            done += w[i].done;
        }
        double dt = now_s() - t0;
        printf("password logins: %5.1f/s with %ld verifying thread%s (%ld core%s)\n", done / dt,
               n, n > 1 ? "s" : "", cores, cores > 1 ? "s" : "");
    }
    free(enc);
}

static void
bench_scrypt_table(void)
{
    static const struct yun_password_params costs[] = {
        { 14, 8, 1 }, { 15, 8, 1 }, { 16, 8, 1 }, { 15, 8, 2 }, { 15, 8, 3 }, { 16, 8, 2 },
        { 15, 8, 4 }, { 17, 8, 1 },
    };
    for (size_t i = 0; i < sizeof costs / sizeof costs[0]; i++) {
        double best = 1e9;
        for (int k = 0; k < 3; k++)
            best = min_d(best, time_scrypt(&costs[i]));
        printf("  scrypt ln=%u r=%u p=%u: %4.0f ms, %3u MiB\n", costs[i].ln, costs[i].r,
               costs[i].p, best, (128u * costs[i].r << costs[i].ln) >> 20);
    }
}

static void
bench_keypairs(void)
{
    struct yun_keypair kp;
    long n = 0;
    double t0 = now_s(), dt;
    do {
        int r = yun_keypair_create(YUN_KEYPAIR_ED25519, 0, "bench", &kp);
        if (r < 0)
            die("keypair create", r);
        if (n == 0) {
            struct yun_keypair back;
            double i0 = now_s();
            long m = 0;
            while (now_s() - i0 < seconds / 2) {
                if ((r = yun_keypair_import(kp.public_key, &back, NULL)) < 0)
                    die("keypair import", r);
                yun_keypair_done(&back);
                m++;
            }
            printf("ssh import:      %9.0f/s (ssh-ed25519 lines)\n", m / (now_s() - i0));
            t0 = now_s();
        }
        yun_keypair_done(&kp);
        n++;
    } while ((dt = now_s() - t0) < seconds);
    printf("ssh create:      %9.0f/s  ed25519\n", (n - 1) / dt);
    n = 0;
    t0 = now_s();
    do {
        int r = yun_keypair_create(YUN_KEYPAIR_RSA, 3072, "bench", &kp);
        if (r < 0)
            die("keypair create", r);
        yun_keypair_done(&kp);
        n++;
    } while ((dt = now_s() - t0) < seconds && n < 20);
    printf("ssh create:      %9.0f ms each, rsa-3072 (mean of %ld)\n", dt / n * 1e3, n);
}


/* --- through yun-scheduler -------------------------------------------------- */

#define BUS_CLIENTS 8

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

struct bus_client {
    pthread_t thread;
    char key_file[600];
    const char *password_file;
    const char *token;          /* NULL: no token */
    bool login;                 /* log in repeatedly instead of pinging */
    double until;
    long done, errors;
    pthread_barrier_t *start;
};

static struct yun_bus_client *
bus_connect(const char *key_file, int timeout_ms)
{
    struct yun_peer_key k = { 0 };
    if (yun_peer_key_load(key_file, &k) < 0)
        return NULL;
    struct yun_bus_client_options o = { .url = k.scheduler, .self_id = k.id, .key_id = k.id,
                                        .key_epoch = k.epoch, .key = &k.key,
                                        .timeout_ms = timeout_ms };
    struct yun_bus_client *c = NULL;
    int r = yun_bus_client_new(&o, &c);
    yun_peer_key_done(&k);
    return r < 0 ? NULL : c;
}

static int
bus_login(struct yun_bus_client *c, const char *password, char **ret_token)
{
    Yun__LoginRequest q = YUN__LOGIN_REQUEST__INIT;
    q.user = (char *)"admin";
    q.password = (char *)password;
    ProtobufCMessage *m = NULL;
    int r = yun_rpc_call(c, YUN__OP__OP_LOGIN, &q.base, &yun__login_reply__descriptor, &m,
                         NULL);
    if (r < 0)
        return r;
    if (ret_token)
        *ret_token = strdup(((Yun__LoginReply *)m)->token);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static void *
bus_client_main(void *arg)
{
    struct bus_client *a = arg;
    struct yun_bus_client *c = bus_connect(a->key_file, 20000);
    char *password = NULL;
    if (a->password_file)
        (void)yun_read_file(a->password_file, 4096, &password, NULL);
    if (password)
        password[strcspn(password, "\n")] = '\0';
    pthread_barrier_wait(a->start);
    if (!c) {
        a->errors++;
        free(password);
        return NULL;
    }
    Yun__PingRequest q = YUN__PING_REQUEST__INIT;
    uint8_t data[64] = { 0 };
    q.data.data = data;
    q.data.len = sizeof data;
    while (now_s() < a->until) {
        int r;
        if (a->login) {
            r = bus_login(c, password ? password : "", NULL);
        } else {
            ProtobufCMessage *m = NULL;
            r = yun_rpc_call_full(c, NULL, a->token, a->token ? strlen(a->token) : 0,
                                  YUN__OP__OP_PING, &q.base, &yun__ping_reply__descriptor, &m,
                                  NULL);
            if (r == 0)
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0)
            a->errors++;
        else
            a->done++;
    }
    yun_bus_client_free(c);
    free(password);
    return NULL;
}

/* CPU seconds (user + system) 'pid' has used so far. */
static double
cpu_seconds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    char buf[2048];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields 14 and 15, after the command name in parentheses. */
    const char *p = strrchr(buf, ')');
    unsigned long utime = 0, stime = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                     &stime) != 2)
        return 0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* 'clients' threads for 'secs' seconds; returns calls per second. */
static double
bus_round(const char *dir, int clients, double secs, const char *token, bool login,
          const char *password_file, long *ret_errors, long *ret_calls)
{
    struct bus_client a[BUS_CLIENTS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++) {
        a[i] = (struct bus_client){ .token = token, .login = login, .start = &start,
                                    .password_file = password_file };
        snprintf(a[i].key_file, sizeof a[i].key_file, "%s/op%d.key", dir, i);
    }
    double t0 = now_s();
    for (int i = 0; i < clients; i++) {
        a[i].until = t0 + secs;
        pthread_create(&a[i].thread, NULL, bus_client_main, &a[i]);
    }
    pthread_barrier_wait(&start);
    long done = 0, errors = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(a[i].thread, NULL);
        done += a[i].done;
        errors += a[i].errors;
    }
    double dt = now_s() - t0;
    pthread_barrier_destroy(&start);
    *ret_errors = errors;
    *ret_calls = done;
    return done / dt;
}

static void
bench_bus(const char *build)
{
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/bench-identity-bus.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        die("mkdtemp", -errno);
    char conf[4200], log[4200], pw[4200], cmd[16384];
    snprintf(conf, sizeof conf, "%s/scheduler.conf", dir);
    snprintf(log, sizeof log, "%s/scheduler.log", dir);
    snprintf(pw, sizeof pw, "%s/admin.password", dir);
    int port = 30000 + getpid() % 20000;
    FILE *f = fopen(conf, "we");
    if (!f)
        die("scheduler.conf", -errno);
    fprintf(f,
            "[scheduler]\nbus_url = tcp://127.0.0.1:%d\nstate_dir = %s/sched\n"
            "secret_file = %s/cluster.key\nlog_level = notice\nlog_file = %s\n",
            port, dir, dir, log);
    fclose(f);
    f = fopen(pw, "we");
    if (!f)
        die("admin.password", -errno);
    fprintf(f, "bench-%d-password\n", getpid());
    fclose(f);
    chmod(pw, 0600);
    snprintf(cmd, sizeof cmd,
             "%s/scheduler/yun-scheduler -c %s init --admin-password-file %s >/dev/null", build,
             conf, pw);
    if (run(cmd) != 0)
        die("yun-scheduler init", -EIO);
    for (int i = 0; i < BUS_CLIENTS; i++) {
        snprintf(cmd, sizeof cmd,
                 "%s/scheduler/yun-scheduler -c %s issue-key --operator op%d --out %s/op%d.key "
                 "2>/dev/null", build, conf, i, dir, i);
        if (run(cmd) != 0)
            die("issue-key", -EIO);
    }
    char bin[4200];
    snprintf(bin, sizeof bin, "%s/scheduler/yun-scheduler", build);
    char *argv[] = { bin, "-c", conf, NULL };
    pid_t sched = spawn(argv, log);
    usleep(500000);

    /* One login gives the token every client sends. */
    char key0[4200];
    snprintf(key0, sizeof key0, "%s/op0.key", dir);
    struct yun_bus_client *c = bus_connect(key0, 20000);
    char *password = NULL;
    (void)yun_read_file(pw, 4096, &password, NULL);
    char *token = NULL;
    int r = -EIO;
    if (c && password) {
        password[strcspn(password, "\n")] = '\0';
        r = bus_login(c, password, &token);
    }
    yun_bus_client_free(c);
    free(password);
    if (r < 0) {
        kill(sched, SIGTERM);
        waitpid(sched, NULL, 0);
        die("login", r);
    }

    long errors, calls;
    double secs = seconds < 3 ? 3 : seconds;
    printf("== through yun-scheduler on loopback (%d clients, %.0f s each)\n", BUS_CLIENTS, secs);
    /* Wall-clock rates depend on what else runs; the scheduler's own CPU
     * time per request does not, much. */
    double cpu0 = cpu_seconds(sched);
    double plain = bus_round(dir, BUS_CLIENTS, secs, NULL, false, NULL, &errors, &calls);
    double cpu1 = cpu_seconds(sched);
    printf("ping, no token:            %9.0f requests/s (%ld errors), scheduler CPU %5.1f us "
           "per request\n", plain, errors, calls ? (cpu1 - cpu0) / calls * 1e6 : 0.0);
    double with = bus_round(dir, BUS_CLIENTS, secs, token, false, NULL, &errors, &calls);
    double cpu2 = cpu_seconds(sched);
    printf("ping, token validated:     %9.0f requests/s (%ld errors), scheduler CPU %5.1f us "
           "per request: tokens validated per second as full requests\n", with, errors,
           calls ? (cpu2 - cpu1) / calls * 1e6 : 0.0);
    double logins = bus_round(dir, BUS_CLIENTS, secs < 6 ? 6 : secs, NULL, true, pw, &errors,
                              &calls);
    double cpu3 = cpu_seconds(sched);
    printf("login (scrypt, 2 workers): %9.1f logins/s   (%ld errors), scheduler CPU %5.0f ms "
           "per login; Keystone: 3.8/s at bcrypt-12\n", logins, errors,
           calls ? (cpu3 - cpu2) / calls * 1e3 : 0.0);
    free(token);
    kill(sched, SIGTERM);
    waitpid(sched, NULL, 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)run(cmd);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "seconds", required_argument, NULL, 's' },
        { "table", no_argument, NULL, 't' },
        { "build", required_argument, NULL, 'b' },
        { "no-bus", no_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    bool table = false, bus = true;
    const char *build = getenv("YUN_BUILD_DIR");
    int c;
    while ((c = getopt_long(argc, argv, "s:th", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            seconds = atof(optarg);
            if (seconds <= 0) {
                fprintf(stderr, "bench-identity: invalid --seconds '%s'\n", optarg);
                return 2;
            }
            break;
        case 't':
            table = true;
            break;
        case 'b':
            build = optarg;
            break;
        case 'n':
            bus = false;
            break;
        case 'h':
            printf("usage: bench-identity [--seconds N] [--table] [--build DIR] [--no-bus]\n");
            return 0;
        default:
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_tokens();
    bench_password_cost();
    bench_logins();
    if (table)
        bench_scrypt_table();
    bench_keypairs();
    if (bus) {
        signal(SIGPIPE, SIG_IGN);
        bench_bus(build ? build : ".");
    }
    return 0;
}
