/*
 * tcpbench: small loopback helpers for bench/compare.sh (compiled at run time).
 *
 *   tcpbench freeport N                 print N distinct free TCP ports on 127.0.0.1
 *   tcpbench waitlisten PORT SECS       wait until something listens on PORT (/proc/net/tcp)
 *   tcpbench zero PORT                  backend: write zeros as fast as possible to every client
 *   tcpbench hold PORT                  backend: accept and hold connections forever; answer each
 *                                       HTTP request with a tiny response (keep-alive, or close
 *                                       after it when the request says "Connection: close")
 *   tcpbench holdmany N                 hold on N ephemeral ports of 127.0.0.1; prints them first
 *   tcpbench probe PORTS INTERVAL SECS tcp|http|httpka
 *                                       the health checker's floor (bench/checks.sh): probe every
 *                                       port of the comma-separated list once per INTERVAL, spread
 *                                       evenly, 1 s timeout; print JSON with this process's CPU
 *   tcpbench bulk ADDRS STREAMS BYTES SECS
 *                                       open STREAMS connections (round robin over the
 *                                       comma-separated host:port list ADDRS), read BYTES in all
 *                                       (split evenly), at most SECS seconds; print JSON
 *   tcpbench idle ADDR N PID SECS [REST]
 *                                       open N idle connections to ADDR, read VmRSS of PID before,
 *                                       after (once PID holds 2N more fds), and again after one
 *                                       small request/response on every connection; print JSON.
 *                                       Each reading after REST s (default 3) of rest, once RSS
 *                                       has settled. Returns once PID has closed them
 *                                       (at most 10 s). PID 0: no proxy to watch. At most
 *                                       2*SECS+2*REST+17 seconds.
 *   tcpbench steady ADDRS N RATE SECS PID LOADPIDS
 *                                       open N connections (round robin over the comma-separated
 *                                       ADDRS, to "hold" servers), then send one small HTTP request
 *                                       every 1/RATE s in turn over them (each connection asks every
 *                                       N/RATE s; one still waiting for its answer is skipped and
 *                                       counted), a warm-up round first, then SECS measured: the
 *                                       latency of every answer (send to last byte), the CPU ticks
 *                                       of PID and of the comma-separated LOADPIDS ("-": none),
 *                                       this process's CPU and the TCP segments sent, over the
 *                                       measured window. PID 0: no proxy. Prints JSON.
 *   tcpbench relay LISTEN=HOST,HOST... [LISTEN=...]
 *                                       the "floor" variant: the least a proxy can do (one
 *                                       thread, epoll, round robin); runs until killed
 *   tcpbench hello NAME                 write the canned TLS ClientHello for NAME to stdout
 *   tcpbench hellocheck ADDR NAME       send it to a real TLS server at ADDR; succeed if a
 *                                       ServerHello comes back (proof the hello is a real one)
 *   tcpbench tlsback PORT ID            backend: read one TLS record (the ClientHello), answer
 *                                       "B<ID> <FNV-1a 64 of the bytes received>\n", close
 *   tcpbench tls ADDRS CONC SECS NAMES route|any
 *                                       CONC connections at a time for SECS seconds, each
 *                                       sending the ClientHello for the next of the comma-separated
 *                                       NAMES (in turn) and reading the backend's answer to EOF.
 *                                       Every answer is checked: the hash proves the hello
 *                                       arrived byte for byte; "route" also wants backend
 *                                       ID i+1 for NAMES[i]. ADDRS: one address for all, or
 *                                       one per name (no proxy: "direct"). Prints JSON.
 *
 * Every loop is bounded in count and time. Loopback only: ADDRs are parsed as IPv4 literals.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loopback_addr.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "tcpbench: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(fd, 16384) < 0) die("listen");
    return fd;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- freeport / waitlisten ---- */

static int cmd_freeport(int n) {
    srand((unsigned)(getpid() ^ (unsigned)(now() * 1e6)));
    int got[64], k = 0;
    if (n > 64) n = 64;
    for (int tries = 0; k < n && tries < 5000; tries++) {
        int port = 20000 + rand() % 12000, dup = 0; /* below the ephemeral range */
        for (int i = 0; i < k; i++) dup |= got[i] == port;
        if (dup) continue;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) got[k++] = port;
        close(fd);
    }
    if (k < n) { fprintf(stderr, "tcpbench: not enough free ports\n"); return 2; }
    for (int i = 0; i < k; i++) printf("%d%c", got[i], i + 1 < k ? ' ' : '\n');
    return 0;
}

static int is_listening(int port) {
    const char *files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        if (!fp) continue;
        char line[512];
        while (fgets(line, sizeof line, fp)) {
            char local[128];
            unsigned st;
            if (sscanf(line, " %*d: %127s %*s %x", local, &st) != 2) continue;
            char *c = strrchr(local, ':');
            if (c && st == 0x0A && (int)strtol(c + 1, NULL, 16) == port) { fclose(fp); return 1; }
        }
        fclose(fp);
    }
    return 0;
}

static int cmd_waitlisten(int port, double secs) {
    double end = now() + secs;
    while (now() < end) {
        if (is_listening(port)) return 0;
        usleep(20000);
    }
    fprintf(stderr, "tcpbench: nothing listens on port %d after %.0fs\n", port, secs);
    return 1;
}

/* ---- zero: bulk backend ---- */

static char zeros[1 << 18];

static void *zero_conn(void *arg) {
    int fd = (int)(intptr_t)arg;
    for (;;) {
        ssize_t w = send(fd, zeros, sizeof zeros, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
    }
    close(fd);
    return NULL;
}

__attribute__((noreturn)) static int cmd_zero(int port) {
    raise_nofile();
    int lfd = listen_on(port);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) { if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) { usleep(1000); continue; } die("accept"); }
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 64 << 10);
        if (pthread_create(&t, &a, zero_conn, (void *)(intptr_t)fd) != 0) close(fd);
        pthread_attr_destroy(&a);
    }
}

/* ---- hold: idle / HTTP backend ---- */

static const char RESP_KA[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
static const char RESP_CLOSE[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

/* Listening sockets carry this bit in their epoll data, connections do not. */
#define HOLD_LISTENER (1ULL << 32)

/* Connections accepted and requests answered so far, printed to stderr on SIGUSR1
 * (bench/checks.sh counts probes). */
static long hold_accepted, hold_requests;
static volatile sig_atomic_t hold_report;
static void on_usr1(int sig) { (void)sig; hold_report = 1; }

/* Serve the hold protocol on every listening socket in lfds[0..n). */
__attribute__((noreturn)) static void serve_hold(const int *lfds, int n) {
    struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART: epoll_wait returns */
    sigaction(SIGUSR1, &sa, NULL);
    int ep = epoll_create1(0);
    struct epoll_event evs[256];
    for (int i = 0; i < n; i++) {
        fcntl(lfds[i], F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = HOLD_LISTENER | (uint32_t)lfds[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, lfds[i], &ev);
    }
    char buf[16384];
    for (;;) {
        int got = epoll_wait(ep, evs, 256, -1);
        if (hold_report) {
            hold_report = 0;
            fprintf(stderr, "accepted %ld requests %ld\n", hold_accepted, hold_requests);
        }
        for (int i = 0; i < got; i++) {
            int fd = (int)(uint32_t)evs[i].data.u64;
            if (evs[i].data.u64 & HOLD_LISTENER) {
                for (int k = 0; k < 1024; k++) {
                    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    hold_accepted++;
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint32_t)c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            ssize_t r = recv(fd, buf, sizeof buf - 1, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(fd); /* also removes it from the epoll set */
                continue;
            }
            buf[r] = 0;
            /* One response per request head in this read (requests are tiny). */
            int close_after = strcasestr(buf, "connection: close") != NULL;
            for (char *p = buf; (p = strstr(p, "\r\n\r\n")) != NULL; p += 4) {
                const char *resp = close_after ? RESP_CLOSE : RESP_KA;
                size_t len = close_after ? sizeof RESP_CLOSE - 1 : sizeof RESP_KA - 1;
                if (send(fd, resp, len, MSG_NOSIGNAL) < 0) break;
                hold_requests++;
            }
            if (close_after) close(fd);
        }
    }
}

__attribute__((noreturn)) static int cmd_hold(int port) {
    raise_nofile();
    int lfd = listen_on(port);
    serve_hold(&lfd, 1);
}

/* holdmany: N hold servers on N ephemeral ports of 127.0.0.1, their ports printed first. */
static int cmd_holdmany(int n) {
    if (n < 1 || n > 20000) { fprintf(stderr, "tcpbench: holdmany wants 1..20000 ports\n"); return 2; }
    raise_nofile();
    int *lfds = calloc((size_t)n, sizeof *lfds);
    if (!lfds) die("calloc");
    for (int i = 0; i < n; i++) {
        lfds[i] = listen_on(0);
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        if (getsockname(lfds[i], (struct sockaddr *)&sa, &len) < 0) die("getsockname");
        printf("%d%c", ntohs(sa.sin_port), i + 1 < n ? ' ' : '\n');
    }
    fflush(stdout);
    serve_hold(lfds, n);
}

/* ---- probe: the least a health checker can do (the floor for bench/checks.sh) ---- */

struct probe_target {
    struct sockaddr_in sa;
    double due, deadline;
    int fd;   /* -1: no connection */
    int busy; /* a probe in flight (else fd, if open, is kept for the next: httpka) */
    int sent;
};

static void probe_close(int ep, struct probe_target *t) {
    epoll_ctl(ep, EPOLL_CTL_DEL, t->fd, NULL);
    close(t->fd);
    t->fd = -1;
    t->busy = 0;
    t->sent = 0;
}

static void probe_end(int ep, struct probe_target *t, int ok, long *oks, long *fails) {
    probe_close(ep, t);
    if (ok) (*oks)++; else (*fails)++;
}

/* Every INTERVAL s, connect to each of the ports in PORTS (comma-separated, 127.0.0.1),
 * spread evenly over the interval, with a 1 s timeout. tcp: close once connected.
 * http: send a GET, read the reply to its end, want "HTTP/1.1 200". httpka: the same
 * over a connection kept from one probe to the next (HTTP/1.1 keep-alive). Prints JSON with
 * the probes done and this process's CPU time over SECS. */
static int cmd_probe(const char *ports, double interval, double secs, const char *mode) {
    int ka = !strcmp(mode, "httpka"), http = ka || !strcmp(mode, "http");
    if ((!http && strcmp(mode, "tcp")) || interval <= 0 || secs <= 0 || secs > 600) {
        fprintf(stderr, "tcpbench: probe PORTS INTERVAL SECS tcp|http|httpka\n");
        return 2;
    }
    raise_nofile();
    int n = 1;
    for (const char *c = ports; *c; c++) n += *c == ',';
    struct probe_target *ts = calloc((size_t)n, sizeof *ts);
    if (!ts) die("calloc");
    double start = now();
    const char *c = ports;
    for (int i = 0; i < n; i++) {
        ts[i].sa.sin_family = AF_INET;
        ts[i].sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ts[i].sa.sin_port = htons((uint16_t)atoi(c));
        ts[i].due = start + interval * i / n;
        ts[i].fd = -1;
        c = strchr(c, ',');
        if (c) c++; else c = "";
    }
    static const char req_close[] = "GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    static const char req_ka[] = "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
    const char *req = ka ? req_ka : req_close;
    size_t req_len = ka ? sizeof req_ka - 1 : sizeof req_close - 1;
    int ep = epoll_create1(0);
    struct epoll_event evs[256];
    char buf[4096];
    long oks = 0, fails = 0;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    double end = start + secs, next_scan = start;
    for (double t = start; t < end; t = now()) {
        if (t >= next_scan) { /* start what is due, time out what is late: ten times a second */
            for (int i = 0; i < n; i++) {
                struct probe_target *p = &ts[i];
                if (p->busy && t > p->deadline) probe_end(ep, p, 0, &oks, &fails);
                if (p->busy || t < p->due) continue;
                p->due += interval;
                p->deadline = t + 1.0;
                p->busy = 1;
                if (p->fd >= 0) { /* kept: ask again */
                    if (send(p->fd, req, req_len, MSG_NOSIGNAL) < 0) probe_end(ep, p, 0, &oks, &fails);
                    else p->sent = 1;
                    continue;
                }
                p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
                if (p->fd < 0) { p->busy = 0; fails++; continue; }
                if (connect(p->fd, (struct sockaddr *)&p->sa, sizeof p->sa) < 0 && errno != EINPROGRESS) {
                    close(p->fd); p->fd = -1; p->busy = 0; fails++; continue;
                }
                struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev);
            }
            next_scan = t + interval / 100.0;
        }
        int ms = (int)((next_scan - now()) * 1000);
        int got = epoll_wait(ep, evs, 256, ms < 0 ? 0 : ms);
        for (int k = 0; k < got; k++) {
            struct probe_target *p = &ts[evs[k].data.u32];
            if (p->fd < 0) continue;
            if (!p->busy) { /* a kept connection with something to read: the host closed it */
                ssize_t r = recv(p->fd, buf, sizeof buf, 0);
                if (!(r < 0 && errno == EAGAIN)) probe_close(ep, p);
                continue;
            }
            if (!p->sent) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || !http) { probe_end(ep, p, !err, &oks, &fails); continue; }
                if (send(p->fd, req, req_len, MSG_NOSIGNAL) < 0) { probe_end(ep, p, 0, &oks, &fails); continue; }
                p->sent = 1;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
                continue;
            }
            ssize_t r = recv(p->fd, buf, sizeof buf, 0);
            if (r < 0 && errno == EAGAIN) continue;
            int ok = r > 12 && !memcmp(buf, "HTTP/1.1 200", 12);
            if (ka && ok) { p->busy = 0; p->sent = 0; oks++; continue; } /* keep it */
            probe_end(ep, p, ok, &oks, &fails);
        }
    }
    getrusage(RUSAGE_SELF, &r1);
    double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
                 (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    double took = now() - start;
    printf("{\"probes_ok\": %ld, \"probes_failed\": %ld, \"secs\": %.3f, \"cpu_secs\": %.4f}\n",
           oks, fails, took, cpu);
    free(ts);
    return fails > oks / 100 ? 1 : 0;
}

/* ---- bulk: throughput client ---- */

struct bulk_job {
    struct sockaddr_in sa;
    long long want, got;
    double deadline, end;
    int err;
};

static void *bulk_stream(void *arg) {
    struct bulk_job *j = arg;
    size_t bufsz = 1 << 20;
    char *buf = malloc(bufsz);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || !buf || connect(fd, (struct sockaddr *)&j->sa, sizeof j->sa) < 0) {
        j->err = errno ? errno : ENOMEM;
        j->end = now();
        if (fd >= 0) close(fd);
        free(buf);
        return NULL;
    }
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (j->got < j->want) {
        long long left = j->want - j->got;
        ssize_t r = recv(fd, buf, left < (long long)bufsz ? (size_t)left : bufsz, 0);
        if (r > 0) {
            j->got += r;
        } else if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
            /* timed out waiting: fall through to the deadline check */
        } else {
            if (r < 0) j->err = errno;
            break;
        }
        if (now() > j->deadline) break;
    }
    j->end = now();
    struct linger lg = {1, 0}; /* abort: no TIME_WAIT, the zero writer stops at once */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    free(buf);
    return NULL;
}

static int cmd_bulk(const char *addrs, int streams, long long bytes, double secs) {
    struct sockaddr_in sas[16];
    int nsa = 0;
    char *copy = strdup(addrs), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && nsa < 16; t = strtok_r(NULL, ",", &save))
        if (parse_addr(t, &sas[nsa]) == 0) nsa++;
    free(copy);
    if (nsa == 0 || streams < 1 || streams > 256) { fprintf(stderr, "tcpbench bulk: bad arguments\n"); return 2; }
    struct bulk_job *jobs = calloc(streams, sizeof *jobs);
    pthread_t *th = calloc(streams, sizeof *th);
    double start = now();
    for (int i = 0; i < streams; i++) {
        jobs[i].sa = sas[i % nsa];
        jobs[i].want = bytes / streams;
        jobs[i].deadline = start + secs;
        pthread_create(&th[i], NULL, bulk_stream, &jobs[i]);
    }
    long long got = 0;
    double end = start;
    int errs = 0, short_streams = 0;
    for (int i = 0; i < streams; i++) {
        pthread_join(th[i], NULL);
        got += jobs[i].got;
        if (jobs[i].end > end) end = jobs[i].end;
        if (jobs[i].err) errs++;
        if (jobs[i].got < jobs[i].want) short_streams++;
    }
    double el = end - start;
    printf("{\"bytes\":%lld,\"secs\":%.4f,\"gbps\":%.3f,\"streams\":%d,\"errors\":%d,\"short_streams\":%d}\n",
           got, el, el > 0 ? got * 8.0 / el / 1e9 : 0.0, streams, errs, short_streams);
    return 0;
}

/* ---- idle: memory per idle connection ---- */

static long rss_kb(int pid) {
    if (pid <= 0) return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    fclose(fp);
    return kb;
}

static int fd_count(int pid) {
    if (pid <= 0) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Wait until PID holds at least `want` fds (`up`: its side of our connections is set
 * up) or at most `want` (!`up`: it has closed them; a process that is gone has too). */
static int wait_fds(int pid, int want, int up, double until) {
    if (pid <= 0) return 1;
    while (now() < until) {
        int n = fd_count(pid);
        if (n < 0) return !up;
        if (up ? n >= want : n <= want) return 1;
        usleep(20000);
    }
    return 0;
}

/* Wait until PID's RSS has not changed for 300 ms (at most until `until`). */
static long settled_rss(int pid, double until) {
    long last = rss_kb(pid);
    double since = now();
    while (pid > 0 && now() < until) {
        usleep(50000);
        long r = rss_kb(pid);
        if (r != last) { last = r; since = now(); }
        else if (now() - since >= 0.3) break;
    }
    return last;
}

/* Idle connections are measured once they have been idle for `rest` seconds
 * (default 3): a proxy may change how it holds them after a while (txlb parks
 * connections idle for 1 s). */
#define IDLE_REST_DEFAULT 3.0

static int cmd_idle(const char *addr, int n, int pid, double secs, double rest) {
    raise_nofile();
    struct sockaddr_in sa;
    if (parse_addr(addr, &sa) < 0 || n < 1 || !(rest >= 0 && rest <= 60)) {
        fprintf(stderr, "tcpbench idle: bad arguments\n");
        return 2;
    }
    useconds_t rest_us = (useconds_t)(rest * 1e6);
    double start = now(), until = start + secs;
    int *fds = malloc(sizeof(int) * n);
    long rss0 = settled_rss(pid, start + 2);
    int fd0 = fd_count(pid), opened = 0, failed = 0;
    for (int i = 0; i < n && now() < until; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) { failed++; break; }
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { close(fd); failed++; continue; }
        fds[opened++] = fd;
        /* pace: do not run more than 512 connections ahead of the proxy's accept loop */
        if (opened % 512 == 0) wait_fds(pid, fd0 + (opened - 512), 1, now() + 2);
    }
    /* the proxy's side: a client fd and a backend fd per connection (bounded wait) */
    int all_fds = wait_fds(pid, fd0 + 2 * opened, 1, now() + 5);
    until = now() + secs; /* a fresh bound for the request phase */
    usleep(rest_us);
    long rss1 = settled_rss(pid, until);
    int fd1 = fd_count(pid);

    /* one small request on each connection, then read each response */
    static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    int sent = 0, answered = 0;
    for (int i = 0; i < opened && now() < until; i++)
        if (send(fds[i], req, sizeof req - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof req - 1)) sent++;
    char buf[512];
    for (int i = 0; i < opened && now() < until; i++) {
        size_t have = 0;
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        while (have < sizeof RESP_KA - 1 && now() < until) {
            if (poll(&p, 1, 1000) <= 0) break;
            ssize_t r = recv(fds[i], buf + have, sizeof buf - have, 0);
            if (r <= 0) break;
            have += r;
        }
        if (have >= sizeof RESP_KA - 1) answered++;
    }
    usleep(rest_us);
    long rss2 = settled_rss(pid, until + rest);
    struct linger lg = {1, 0};
    for (int i = 0; i < opened; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fds[i]);
    }
    /* the proxy's teardown of these connections must not run into what is measured
     * next; a few descriptors it opened on the way (txlb's parking lot) may stay */
    int all_closed = wait_fds(pid, fd0 + 16, 0, now() + 10);
    printf("{\"conns\":%d,\"failed\":%d,\"proxy_fds_before\":%d,\"proxy_fds_idle\":%d,\"all_fds_seen\":%s,"
           "\"rss_base_kb\":%ld,\"rss_idle_kb\":%ld,\"rss_after_req_kb\":%ld,\"sent\":%d,\"answered\":%d,"
           "\"all_closed\":%s,\"secs\":%.3f}\n",
           opened, failed, fd0, fd1, all_fds ? "true" : "false", rss0, rss1, rss2, sent, answered,
           all_closed ? "true" : "false", now() - start);
    free(fds);
    return 0;
}


/* ---- steady: many connections, each asking at a steady rate ---- */

/* utime + stime of a process, in clock ticks (0 if it is not there). */
static long proc_ticks(int pid) {
    if (pid <= 0) return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    long v[13] = {0};
    /* after ") ": state, then fields 4..; utime and stime are the 12th and 13th */
    char *save = NULL, *t = strtok_r(p + 2, " ", &save);
    for (int i = 0; t && i < 13; i++, t = strtok_r(NULL, " ", &save)) v[i] = atol(t);
    return v[11] + v[12];
}

static long pids_ticks(const int *pids, int n) {
    long t = 0;
    for (int i = 0; i < n; i++) t += proc_ticks(pids[i]);
    return t;
}

/* TCP segments sent (OutSegs of /proc/net/snmp): this network namespace's. */
static long tcp_out_segs(void) {
    FILE *fp = fopen("/proc/net/snmp", "r");
    if (!fp) return 0;
    char line[1024];
    long segs = 0;
    int tcp_lines = 0;
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "Tcp:", 4) || ++tcp_lines < 2) continue;
        char *save = NULL, *t = strtok_r(line + 4, " ", &save);
        for (int i = 1; t && i < 11; i++) t = strtok_r(NULL, " ", &save);
        if (t) segs = atol(t);
    }
    fclose(fp);
    return segs;
}

static double cpu_ms_self(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec * 1e3 + r.ru_utime.tv_usec / 1e3 + r.ru_stime.tv_sec * 1e3 + r.ru_stime.tv_usec / 1e3;
}

static int cmp_double(const void *a, const void *b);

#define STEADY_MAX_ADDRS 16
#define STEADY_MAX_LOAD 64

struct steady_conn {
    double sent_at;   /* when the request waiting for its answer was sent; 0: none */
    int got;          /* bytes of that answer read */
    int dead;         /* closed by the other end */
};

static int cmd_steady(const char *addrs, int n, double rate, double secs, int pid, const char *loadpids) {
    raise_nofile();
    struct sockaddr_in sas[STEADY_MAX_ADDRS];
    int naddrs = 0, load[STEADY_MAX_LOAD], nload = 0;
    char copy[1024], *save = NULL;
    snprintf(copy, sizeof copy, "%s", addrs);
    for (char *t = strtok_r(copy, ",", &save); t && naddrs < STEADY_MAX_ADDRS; t = strtok_r(NULL, ",", &save))
        if (parse_addr(t, &sas[naddrs]) == 0) naddrs++;
    snprintf(copy, sizeof copy, "%s", loadpids);
    save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t && nload < STEADY_MAX_LOAD; t = strtok_r(NULL, ", ", &save))
        if (atoi(t) > 0) load[nload++] = atoi(t);
    if (!naddrs || n < 1 || n > 100000 || !(rate > 0 && rate <= 200000) || !(secs > 0 && secs <= 600)) {
        fprintf(stderr, "tcpbench steady: bad arguments\n");
        return 2;
    }
    static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    const int resp_len = (int)sizeof RESP_KA - 1;
    double start = now();
    int *fds = malloc(sizeof(int) * n);
    struct steady_conn *cs = calloc((size_t)n, sizeof *cs);
    int fd0 = fd_count(pid), opened = 0, failed = 0, one = 1;
    /* connecting: at most 60 s, never more than 512 ahead of the proxy's accept loop */
    for (int i = 0; i < n && now() < start + 60; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) { failed++; break; }
        if (connect(fd, (struct sockaddr *)&sas[i % naddrs], sizeof sas[0]) < 0) { close(fd); failed++; continue; }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fds[opened++] = fd;
        if (opened % 512 == 0) wait_fds(pid, fd0 + (opened - 512), 1, now() + 2);
    }
    int all_fds = wait_fds(pid, fd0 + 2 * opened, 1, now() + 10);
    int ep = epoll_create1(0);
    for (int i = 0; i < opened; i++) {
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    double period = opened / rate;         /* each connection asks once per period */
    double warm = period + 1;              /* every connection asked once before measuring */
    size_t cap = (size_t)(rate * secs * 1.2) + 1024, nsamples = 0;
    double *samples = malloc(sizeof(double) * cap);
    long sent = 0, answered = 0, skipped = 0, errors = 0, closed = 0, late = 0, seq = 0;
    double max_lag = 0;
    double t0 = now(), m_start = t0 + warm, m_end = m_start + secs;
    long p0 = 0, l0 = 0, g0 = 0, p1 = 0, l1 = 0, g1 = 0;
    double c0 = 0, c1 = 0;
    int measuring = 0;
    struct epoll_event evs[256];
    char buf[4096];
    for (;;) {
        double t = now();
        if (!measuring && t >= m_start) {
            measuring = 1;
            p0 = proc_ticks(pid); l0 = pids_ticks(load, nload); g0 = tcp_out_segs(); c0 = cpu_ms_self();
        }
        /* sending ends with the window; the answers still due get 1 s */
        int sending = t < m_end;
        if (!sending) {
            int waiting = 0;
            for (int i = 0; i < opened && !waiting; i++) waiting = cs[i].sent_at > 0 && !cs[i].dead;
            if (!waiting || t >= m_end + 1) break;
        }
        while (sending && opened) {
            double due = t0 + seq / rate;
            if (due > t || due >= m_end) break;
            int i = (int)(seq % opened);
            seq++;
            if (cs[i].dead) { errors++; continue; }
            if (cs[i].sent_at > 0) { skipped++; continue; }
            if (t - due > max_lag) max_lag = t - due;
            if (t - due > 1e-3) late++;
            if (send(fds[i], req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1)) { errors++; continue; }
            cs[i].sent_at = t;
            cs[i].got = 0;
            if (t >= m_start) sent++;
        }
        double next = t0 + seq / rate, wait = sending ? next - now() : 0.01;
        if (wait < 0) wait = 0;
        if (wait > 0.05) wait = 0.05;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(wait * 1e9)};
        int got = epoll_pwait2(ep, evs, 256, &ts, NULL);
        for (int k = 0; k < got; k++) {
            int i = (int)evs[k].data.u32;
            ssize_t r = recv(fds[i], buf, sizeof buf, 0);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) {
                closed++;
                cs[i].dead = 1;
                epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                continue;
            }
            double done = now();
            cs[i].got += (int)r;
            if (cs[i].sent_at > 0 && cs[i].got >= resp_len) {
                if (cs[i].sent_at >= m_start && cs[i].sent_at < m_end) {
                    answered++;
                    if (nsamples < cap) samples[nsamples++] = (done - cs[i].sent_at) * 1e3;
                }
                cs[i].got -= resp_len;
                cs[i].sent_at = 0;
            }
        }
    }
    p1 = proc_ticks(pid); l1 = pids_ticks(load, nload); g1 = tcp_out_segs(); c1 = cpu_ms_self();
    qsort(samples, nsamples, sizeof *samples, cmp_double);
#define PCT(q) (nsamples ? samples[(size_t)((q) * (nsamples - 1))] : -1.0)
    double sum = 0;
    for (size_t i = 0; i < nsamples; i++) sum += samples[i];
    struct linger lg = {1, 0};
    for (int i = 0; i < opened; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fds[i]);
    }
    int all_closed = wait_fds(pid, fd0 + 16, 0, now() + 10);
    printf("{\"conns\":%d,\"failed\":%d,\"all_fds_seen\":%s,\"rate_asked\":%.1f,\"window_s\":%.3f,"
           "\"sent\":%ld,\"requests\":%ld,\"rate\":%.1f,\"skipped\":%ld,\"errors\":%ld,\"closed\":%ld,"
           "\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,\"mean_ms\":%.4f,"
           "\"late_1ms\":%ld,\"max_lag_ms\":%.3f,\"cpu_ticks\":%ld,\"load_ticks\":%ld,\"client_ms\":%.0f,"
           "\"segs\":%ld,\"all_closed\":%s,\"secs\":%.3f}\n",
           opened, failed, all_fds ? "true" : "false", rate, secs, sent, answered, answered / secs, skipped,
           errors + (sent - answered) + failed + (all_fds ? 0 : 1), closed, PCT(0.5), PCT(0.9), PCT(0.99),
           PCT(0.999), nsamples ? samples[nsamples - 1] : -1.0, nsamples ? sum / nsamples : -1.0, late,
           max_lag * 1e3, p1 - p0, l1 - l0, c1 - c0, g1 - g0, all_closed ? "true" : "false", now() - start);
#undef PCT
    free(samples);
    free(cs);
    free(fds);
    close(ep);
    return 0;
}

/* ---- relay: the kernel's floor for a proxy ----
 *
 * The least a user-space TCP proxy can do per connection and per request, so the
 * benchmark can show how much of every proxy's CPU is the kernel's own TCP work:
 * one thread, edge-triggered epoll, TCP_NODELAY inherited from the listener,
 * round robin, no timeouts, no accounting, no logging, no epoll_ctl(DEL) (close
 * removes the socket). Like txlb it takes a short read as "drained" (saves the
 * read that returns EAGAIN) and sends a source's last bytes with MSG_MORE before
 * passing its FIN on. Not a proxy to run: a connect failure just closes.
 */

#define RELAY_BUF (64 * 1024)
#define RELAY_MAX_LISTENERS 8
#define RELAY_LISTENER_TAG (1ULL << 63)

struct relay_dir {      /* one direction: bytes from fd[i] to fd[1 - i] */
    char *buf;          /* held only while bytes wait to be written */
    int pos, len;
    int readable;       /* the source may have bytes: an event said so, or the last read filled buf */
    int read_done, done;
};

struct relay_conn {
    int fd[2];          /* 0: client, 1: host */
    int rdhup[2];       /* FIN seen on fd[i]: read to EOF, don't stop at a short read */
    struct relay_dir dir[2]; /* 0: client -> host, 1: host -> client */
};

struct relay_listener {
    int fd;
    struct sockaddr_in hosts[16];
    int nhosts, next;
};

static char *relay_pool[256];
static int relay_pooled;

static char *relay_buf_get(void) {
    if (relay_pooled) return relay_pool[--relay_pooled];
    char *b = malloc(RELAY_BUF);
    if (!b) die("malloc");
    return b;
}

static void relay_buf_put(struct relay_dir *d) {
    d->pos = d->len = 0;
    if (!d->buf) return;
    if (relay_pooled < 256) relay_pool[relay_pooled++] = d->buf;
    else free(d->buf);
    d->buf = NULL;
}

/* Moves bytes one way until it would block; -1 on an error (the connection ends).
 * Reads only when the source may have bytes, so no read returns EAGAIN but after
 * a stale event. */
static int relay_move(struct relay_conn *c, int i) {
    struct relay_dir *d = &c->dir[i];
    int from = c->fd[i], to = c->fd[1 - i];
    while (!d->done) {
        while (d->pos < d->len) {
            ssize_t w = send(to, d->buf + d->pos, d->len - d->pos,
                             MSG_NOSIGNAL | (d->read_done ? MSG_MORE : 0));
            if (w < 0) return errno == EAGAIN ? 0 : -1;
            d->pos += (int)w;
        }
        if (d->read_done) {
            d->done = 1;
            relay_buf_put(d);
            if (!c->dir[1 - i].done) shutdown(to, SHUT_WR);
            return 0;
        }
        if (!d->readable) {
            relay_buf_put(d);
            return 0;
        }
        if (!d->buf) d->buf = relay_buf_get();
        ssize_t r = recv(from, d->buf, RELAY_BUF, 0);
        if (r < 0) {
            d->readable = 0;
            relay_buf_put(d);
            return errno == EAGAIN ? 0 : -1;
        }
        d->pos = 0;
        d->len = (int)r;
        if (r == 0) d->read_done = 1;
        else if (r < RELAY_BUF) {
            d->readable = 0; /* drained: the next byte or FIN brings an event */
            if (c->rdhup[i]) { /* the FIN is next: take it so it leaves with these bytes */
                ssize_t more = recv(from, d->buf + r, RELAY_BUF - r, 0);
                if (more == 0) d->read_done = 1;
                else if (more > 0) d->len += (int)more;
            }
        }
    }
    return 0;
}

/* TCPBENCH_RELAY_DEL=1: epoll_ctl(DEL) both sockets before closing them, as tokio does,
 * to measure what that costs a proxy (close alone removes them). */
static int relay_ep = -1, relay_del;

static void relay_close(struct relay_conn *c) {
    if (relay_del) {
        epoll_ctl(relay_ep, EPOLL_CTL_DEL, c->fd[0], NULL);
        epoll_ctl(relay_ep, EPOLL_CTL_DEL, c->fd[1], NULL);
    }
    close(c->fd[0]);
    close(c->fd[1]);
    relay_buf_put(&c->dir[0]);
    relay_buf_put(&c->dir[1]);
    free(c);
}

static void relay_accept(int ep, struct relay_listener *l) {
    for (;;) {
        int client = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK);
        if (client < 0) return;
        int host = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
        struct relay_conn *c = calloc(1, sizeof *c);
        if (host < 0 || !c) { close(client); if (host >= 0) close(host); free(c); continue; }
        setsockopt(host, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in *to = &l->hosts[l->next++ % l->nhosts];
        if (connect(host, (struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
            close(client); close(host); free(c); continue;
        }
        c->fd[0] = client;
        c->fd[1] = host;
        for (int i = 0; i < 2; i++) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                     .data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)i};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[i], &ev);
        }
    }
}

/* relay LISTEN=HOST,HOST... [LISTEN=...]: runs until killed. */
static int cmd_relay(int n, char **specs) {
    raise_nofile();
    static struct relay_listener ls[RELAY_MAX_LISTENERS];
    int ep = epoll_create1(0), one = 1;
    if (ep < 0) die("epoll_create1");
    relay_ep = ep;
    relay_del = getenv("TCPBENCH_RELAY_DEL") != NULL;
    if (n > RELAY_MAX_LISTENERS) n = RELAY_MAX_LISTENERS;
    for (int k = 0; k < n; k++) {
        char spec[512], *eq, *tok, *save;
        snprintf(spec, sizeof spec, "%s", specs[k]);
        struct sockaddr_in at;
        if (!(eq = strchr(spec, '='))) { fprintf(stderr, "tcpbench: relay: bad spec %s\n", specs[k]); return 2; }
        *eq = 0;
        if (parse_addr(spec, &at) < 0) { fprintf(stderr, "tcpbench: relay: bad address %s\n", spec); return 2; }
        for (tok = strtok_r(eq + 1, ",", &save); tok && ls[k].nhosts < 16; tok = strtok_r(NULL, ",", &save))
            if (parse_addr(tok, &ls[k].hosts[ls[k].nhosts]) == 0) ls[k].nhosts++;
        if (!ls[k].nhosts) { fprintf(stderr, "tcpbench: relay: no host in %s\n", specs[k]); return 2; }
        ls[k].fd = listen_on(ntohs(at.sin_port));
        setsockopt(ls[k].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* accepted sockets inherit it */
        fcntl(ls[k].fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = RELAY_LISTENER_TAG | (uint64_t)k};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, ls[k].fd, &ev) < 0) die("epoll_ctl");
    }
    struct epoll_event evs[512];
    for (;;) {
        int got = epoll_wait(ep, evs, 512, -1);
        if (got < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < got; e++) {
            uint64_t tag = evs[e].data.u64;
            if (tag & RELAY_LISTENER_TAG) {
                if ((int)(tag & 0xff) < n) relay_accept(ep, &ls[tag & 0xff]);
                continue;
            }
            struct relay_conn *c = (struct relay_conn *)(uintptr_t)(tag & ~1ULL);
            int side = (int)(tag & 1);
            uint32_t got_events = evs[e].events;
            if (got_events & (EPOLLRDHUP | EPOLLHUP)) c->rdhup[side] = 1;
            if (got_events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->dir[side].readable = 1;
            if (relay_move(c, side) < 0 || relay_move(c, 1 - side) < 0 ||
                (c->dir[0].done && c->dir[1].done)) {
                relay_close(c);
                /* later events of this batch may name it: drop them */
                for (int f = e + 1; f < got; f++)
                    if ((evs[f].data.u64 & ~1ULL) == (uint64_t)(uintptr_t)c) evs[f].data.u64 = RELAY_LISTENER_TAG | 0xff;
            }
        }
    }
}

/* ---- TLS passthrough: a canned ClientHello, its backend and its load ----
 *
 * The proxies under test only peek at the ClientHello (SNI) and then relay bytes,
 * so no handshake is completed: the backend reads the hello, answers a few bytes
 * and closes, as an HTTP backend does after one `Connection: close` request. */

#define HELLO_MAX 1024
#define TLS_NAMES_MAX 4

static void put16(unsigned char *p, size_t v) { p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v; }

/* The ClientHello OpenSSL 3.0's `s_client -servername NAME -alpn h2,http/1.1` sends,
 * extension for extension (TLS 1.3 and 1.2 suites, an x25519 key share, ALPN h2 and
 * http/1.1), with SNI NAME. Random, session id and key share are fixed bytes derived
 * from NAME: a proxy looks at none of them. Returns its length, 0 if NAME is too long. */
static size_t build_hello(const char *name, unsigned char *out) {
    static const unsigned char suites[] = {
        0x13, 0x02, 0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8,
        0xcc, 0xaa, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23,
        0xc0, 0x27, 0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33,
        0x00, 0x9d, 0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff};
    /* the extensions after server_name, as OpenSSL orders them; the key share's
     * 32 bytes are filled in below */
    static const unsigned char tail[] = {
        0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02,                   /* ec_point_formats */
        0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d, 0x00, 0x17, 0x00, /* supported_groups */
        0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x04,
        0x00, 0x23, 0x00, 0x00,                                           /* session_ticket */
        0x00, 0x10, 0x00, 0x0e, 0x00, 0x0c, 0x02, 'h', '2',               /* ALPN */
        0x08, 'h', 't', 't', 'p', '/', '1', '.', '1',
        0x00, 0x16, 0x00, 0x00,                                           /* encrypt_then_mac */
        0x00, 0x17, 0x00, 0x00,                                           /* extended_master_secret */
        0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, /* signature_algorithms */
        0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05,
        0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02, 0x04,
        0x02, 0x05, 0x02, 0x06, 0x02,
        0x00, 0x2b, 0x00, 0x09, 0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02, 0x03, 0x01, /* supported_versions */
        0x00, 0x2d, 0x00, 0x02, 0x01, 0x01,                               /* psk_key_exchange_modes */
        0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20};      /* key_share: x25519, 32 bytes */
    size_t n = strlen(name), p = 0;
    if (n == 0 || n > 255) return 0;
    uint32_t x = 2166136261u; /* a small generator seeded by NAME for the "random" bytes */
    for (size_t i = 0; i < n; i++) x = (x ^ (unsigned char)name[i]) * 16777619u;
#define FILL(count) for (int k = 0; k < (count); k++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; out[p++] = (unsigned char)x; }
    out[p++] = 0x16; out[p++] = 0x03; out[p++] = 0x01; p += 2;  /* record header; length below */
    out[p++] = 0x01; p += 3;                                    /* ClientHello; length below */
    out[p++] = 0x03; out[p++] = 0x03;                           /* legacy_version TLS 1.2 */
    FILL(32);                                                   /* random */
    out[p++] = 32; FILL(32);                                    /* legacy_session_id */
    put16(out + p, sizeof suites); p += 2;
    memcpy(out + p, suites, sizeof suites); p += sizeof suites;
    out[p++] = 0x01; out[p++] = 0x00;                           /* compression: null */
    size_t ext_len_at = p;
    p += 2;
    put16(out + p, 0x0000); put16(out + p + 2, n + 5);          /* server_name */
    put16(out + p + 4, n + 3); out[p + 6] = 0x00; put16(out + p + 7, n);
    p += 9;
    memcpy(out + p, name, n); p += n;
    memcpy(out + p, tail, sizeof tail); p += sizeof tail;
    FILL(32);                                                   /* the x25519 public key */
#undef FILL
    put16(out + ext_len_at, p - ext_len_at - 2);
    put16(out + 3, p - 5);
    out[6] = 0; put16(out + 7, p - 9);
    return p;
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
#define FNV_START 14695981039346656037ull

static int cmd_hello(const char *name) {
    unsigned char h[HELLO_MAX];
    size_t n = build_hello(name, h);
    if (!n) { fprintf(stderr, "tcpbench hello: bad name\n"); return 2; }
    return fwrite(h, 1, n, stdout) == n ? 0 : 1;
}

static int cmd_hellocheck(const char *addr, const char *name) {
    struct sockaddr_in sa;
    unsigned char h[HELLO_MAX], in[64];
    size_t n = build_hello(name, h), have = 0;
    if (parse_addr(addr, &sa) < 0 || !n) { fprintf(stderr, "tcpbench hellocheck: bad arguments\n"); return 2; }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("hellocheck: connect");
    if (send(fd, h, n, MSG_NOSIGNAL) != (ssize_t)n) die("hellocheck: send");
    while (have < 6) {
        ssize_t r = recv(fd, in + have, sizeof in - have, 0);
        if (r <= 0) break;
        have += (size_t)r;
    }
    close(fd);
    /* a handshake record (22) whose first message is a ServerHello (2) */
    if (have >= 6 && in[0] == 0x16 && in[5] == 0x02) { printf("ServerHello for %s (%zu-byte ClientHello)\n", name, n); return 0; }
    fprintf(stderr, "tcpbench hellocheck: no ServerHello (%zu bytes back, first %02x)\n", have, have ? in[0] : 0);
    return 1;
}

/* ---- tlsback ---- */

struct tls_peer {
    size_t have, need; /* bytes read; 5 + record length once the header is in */
    unsigned char hdr[5];
    uint64_t hash;     /* of every byte read */
};

__attribute__((noreturn)) static int cmd_tlsback(int port, int id) {
    raise_nofile();
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    size_t max_fd = rl.rlim_cur > (1u << 20) ? (1u << 20) : rl.rlim_cur;
    struct tls_peer **peers = calloc(max_fd, sizeof *peers);
    int lfd = listen_on(port);
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, evs[256];
    if (!peers || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("tlsback: setup");
    unsigned char buf[4096];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                for (int k = 0; k < 1024; k++) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    struct tls_peer *t = (size_t)c < max_fd ? calloc(1, sizeof *t) : NULL;
                    if (!t) { close(c); continue; }
                    t->hash = FNV_START;
                    peers[c] = t;
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            struct tls_peer *t = peers[fd];
            enum { WAIT, GONE, ANSWER, BAD } end = WAIT;
            while (end == WAIT) {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r < 0 && errno == EAGAIN) break;
                if (r <= 0) { end = GONE; break; } /* closed before the whole record: no answer */
                for (size_t k = t->have; k < 5 && k - t->have < (size_t)r; k++) t->hdr[k] = buf[k - t->have];
                t->have += (size_t)r;
                t->hash = fnv1a(t->hash, buf, (size_t)r);
                if (!t->need && t->have >= 5) {
                    size_t len = (size_t)t->hdr[3] << 8 | t->hdr[4];
                    if (t->hdr[0] != 0x16 || len > 16384) end = BAD; /* not a handshake record */
                    t->need = 5 + len;
                }
                /* exactly one record: a byte more is not what the client sent */
                if (end == WAIT && t->need && t->have >= t->need) end = t->have == t->need ? ANSWER : BAD;
            }
            if (end == WAIT) continue;
            char out[32];
            int len = end == ANSWER ? snprintf(out, sizeof out, "B%d %016llx\n", id, (unsigned long long)t->hash)
                                    : snprintf(out, sizeof out, "B%d BAD\n", id);
            if (end != GONE) send(fd, out, (size_t)len, MSG_NOSIGNAL);
            free(t);
            peers[fd] = NULL;
            close(fd);
        }
    }
}

/* ---- tls: the load ---- */

struct tls_conn {
    int fd, name, sent;
    double t0;
    size_t rlen;
    char rbuf[64];
};

struct tls_load {
    int ep, nnames, naddrs, route;
    struct sockaddr_in addrs[TLS_NAMES_MAX];
    unsigned char hello[TLS_NAMES_MAX][HELLO_MAX];
    size_t hello_len[TLS_NAMES_MAX];
    uint64_t hash[TLS_NAMES_MAX];
    unsigned long next;
    long ok, connect_err, reset, no_answer, bad_bytes, wrong_route;
    double *lat;
    size_t nlat, cap;
};

static int tls_send(struct tls_load *L, struct tls_conn *c) {
    ssize_t w = send(c->fd, L->hello[c->name], L->hello_len[c->name], MSG_NOSIGNAL);
    if (w == (ssize_t)L->hello_len[c->name]) { c->sent = 1; return 0; }
    if (w < 0 && (errno == EAGAIN || errno == ENOTCONN || errno == EINPROGRESS)) return 0; /* connecting */
    return -1; /* a partial send of a few hundred bytes into an empty socket does not happen */
}

/* Opens the next connection in slot c; 0 when it is under way. */
static int tls_start(struct tls_load *L, struct tls_conn *c, uint32_t slot) {
    c->name = (int)(L->next++ % (unsigned long)L->nnames);
    c->sent = 0;
    c->rlen = 0;
    c->t0 = now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("tls: socket");
    struct sockaddr_in *to = &L->addrs[L->naddrs == 1 ? 0 : c->name];
    if ((connect(c->fd, (struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) || tls_send(L, c) < 0) {
        L->connect_err++;
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u32 = slot};
    if (epoll_ctl(L->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("tls: epoll_ctl");
    return 0;
}

/* The answer to EOF: is it the right backend's, with the hash of exactly our hello? */
static void tls_judge(struct tls_load *L, struct tls_conn *c) {
    c->rbuf[c->rlen < sizeof c->rbuf ? c->rlen : sizeof c->rbuf - 1] = 0;
    int id = -1;
    unsigned long long h = 0;
    if (c->rlen == 0) { L->no_answer++; return; }
    if (sscanf(c->rbuf, "B%d %16llx\n", &id, &h) != 2 || h != L->hash[c->name]) { L->bad_bytes++; return; }
    if (L->route && id != c->name + 1) { L->wrong_route++; return; }
    L->ok++;
    if (L->nlat == L->cap && L->cap < (8u << 20)) {
        L->cap = L->cap ? 2 * L->cap : 65536;
        L->lat = realloc(L->lat, L->cap * sizeof *L->lat);
        if (!L->lat) die("tls: realloc");
    }
    if (L->nlat < L->cap) L->lat[L->nlat++] = now() - c->t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_tls(const char *addrs, int conc, double secs, const char *names, const char *mode) {
    raise_nofile();
    static struct tls_load L;
    char copy[512], *save = NULL;
    snprintf(copy, sizeof copy, "%s", names);
    for (char *t = strtok_r(copy, ",", &save); t && L.nnames < TLS_NAMES_MAX; t = strtok_r(NULL, ",", &save)) {
        L.hello_len[L.nnames] = build_hello(t, L.hello[L.nnames]);
        if (!L.hello_len[L.nnames]) break;
        L.hash[L.nnames] = fnv1a(FNV_START, L.hello[L.nnames], L.hello_len[L.nnames]);
        L.nnames++;
    }
    snprintf(copy, sizeof copy, "%s", addrs);
    save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && L.naddrs < TLS_NAMES_MAX; t = strtok_r(NULL, ",", &save))
        if (parse_addr(t, &L.addrs[L.naddrs]) == 0) L.naddrs++;
    L.route = !strcmp(mode, "route");
    if (!L.nnames || !(L.naddrs == 1 || L.naddrs == L.nnames) || conc < 1 || conc > 4096 || !(secs > 0 && secs <= 600) ||
        (!L.route && strcmp(mode, "any"))) {
        fprintf(stderr, "tcpbench tls: bad arguments\n");
        return 2;
    }
    L.ep = epoll_create1(0);
    struct tls_conn *cs = calloc((size_t)conc, sizeof *cs);
    struct epoll_event evs[256];
    double start = now(), stop = start + secs, last = start;
    int active = 0;
    for (int i = 0; i < conc; i++) active += tls_start(&L, &cs[i], (uint32_t)i) == 0;
    /* a connection that has not finished 3 s after the end is counted and dropped */
    while (active > 0 && now() < stop + 3) {
        int n = epoll_wait(L.ep, evs, 256, 100);
        for (int e = 0; e < n; e++) {
            struct tls_conn *c = &cs[evs[e].data.u32];
            if (c->fd < 0) continue;
            int end = 0; /* 1: EOF, -1: failed */
            if (!c->sent && tls_send(&L, c) < 0) end = -1;
            while (c->sent && !end) {
                char tmp[64];
                ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
                if (r > 0) {
                    size_t room = sizeof c->rbuf - 1 - c->rlen, k = (size_t)r < room ? (size_t)r : room;
                    memcpy(c->rbuf + c->rlen, tmp, k);
                    c->rlen += k;
                } else if (r == 0) {
                    end = 1;
                } else if (errno != EAGAIN) {
                    end = -1;
                } else {
                    break;
                }
            }
            if (!end) continue;
            if (end > 0) tls_judge(&L, c);
            else L.reset++;
            close(c->fd);
            c->fd = -1;
            last = now();
            active--;
            /* start the next one (a connection that fails to start is counted: retry in the same slot) */
            while (now() < stop && c->fd < 0) active += tls_start(&L, c, evs[e].data.u32) == 0;
        }
    }
    long timeouts = 0;
    for (int i = 0; i < conc; i++)
        if (cs[i].fd >= 0) { timeouts++; close(cs[i].fd); }
    double el = last - start;
    qsort(L.lat, L.nlat, sizeof *L.lat, cmp_double);
    double p50 = L.nlat ? L.lat[L.nlat / 2] * 1e3 : 0, p99 = L.nlat ? L.lat[(size_t)(L.nlat * 0.99)] * 1e3 : 0;
    long errors = L.connect_err + L.reset + L.no_answer + L.bad_bytes + L.wrong_route + timeouts;
    printf("{\"conns\":%ld,\"secs\":%.4f,\"rate\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"hello_bytes\":%zu,"
           "\"errors\":%ld,\"connect_errors\":%ld,\"resets\":%ld,\"no_answer\":%ld,\"bad_bytes\":%ld,"
           "\"wrong_route\":%ld,\"timeouts\":%ld}\n",
           L.ok, el, el > 0 ? L.ok / el : 0.0, p50, p99, L.hello_len[0], errors, L.connect_err, L.reset,
           L.no_answer, L.bad_bytes, L.wrong_route, timeouts);
    free(cs);
    free(L.lat);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "freeport")) return cmd_freeport(atoi(argv[2]));
    if (argc >= 4 && !strcmp(argv[1], "waitlisten")) return cmd_waitlisten(atoi(argv[2]), atof(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "zero")) return cmd_zero(atoi(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "hold")) return cmd_hold(atoi(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "holdmany")) return cmd_holdmany(atoi(argv[2]));
    if (argc >= 6 && !strcmp(argv[1], "probe")) return cmd_probe(argv[2], atof(argv[3]), atof(argv[4]), argv[5]);
    if (argc >= 6 && !strcmp(argv[1], "bulk"))
        return cmd_bulk(argv[2], atoi(argv[3]), atoll(argv[4]), atof(argv[5]));
    if (argc >= 6 && !strcmp(argv[1], "idle"))
        return cmd_idle(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]),
                        argc >= 7 ? atof(argv[6]) : IDLE_REST_DEFAULT);
    if (argc >= 8 && !strcmp(argv[1], "steady"))
        return cmd_steady(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]), atoi(argv[6]), argv[7]);
    if (argc >= 3 && !strcmp(argv[1], "relay")) return cmd_relay(argc - 2, argv + 2);
    if (argc >= 3 && !strcmp(argv[1], "hello")) return cmd_hello(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "hellocheck")) return cmd_hellocheck(argv[2], argv[3]);
    if (argc >= 4 && !strcmp(argv[1], "tlsback")) return cmd_tlsback(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 7 && !strcmp(argv[1], "tls"))
        return cmd_tls(argv[2], atoi(argv[3]), atof(argv[4]), argv[5], argv[6]);
    fprintf(stderr,
            "usage: tcpbench freeport N | waitlisten PORT SECS | zero PORT | hold PORT | holdmany N |\n"
            "       probe PORTS INTERVAL SECS tcp|http |\n"
            "       bulk ADDRS STREAMS BYTES SECS | idle ADDR N PID SECS [REST] |\n"
            "       steady ADDRS N RATE SECS PID LOADPIDS |\n"
            "       relay LISTEN=HOST,HOST... [LISTEN=...] | hello NAME | hellocheck ADDR NAME |\n"
            "       tlsback PORT ID | tls ADDRS CONC SECS NAMES route|any\n");
    return 2;
}
