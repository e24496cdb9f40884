/*
 * tcpbench: small loopback helpers for bench/compare.sh (compiled at run time).
 *
 *   tcpbench freeport N                 print N distinct free TCP ports on 127.0.0.1
 *   tcpbench waitlisten PORT SECS       wait until something listens on PORT (/proc/net/tcp)
 *   tcpbench zero PORT                  backend: write zeros as fast as possible to every client
 *   tcpbench hold PORT                  backend: accept and hold connections forever; answer each
 *                                       HTTP request with a tiny response (keep-alive, or close
 *                                       after it when the request says "Connection: close")
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
 *   tcpbench relay LISTEN=HOST,HOST... [LISTEN=...]
 *                                       the "floor" variant: the least a proxy can do (one
 *                                       thread, epoll, round robin); runs until killed
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

__attribute__((noreturn)) static int cmd_hold(int port) {
    raise_nofile();
    int lfd = listen_on(port);
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    char buf[16384];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                for (int k = 0; k < 1024; k++) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
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
            }
            if (close_after) close(fd);
        }
    }
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

static void relay_close(struct relay_conn *c) {
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

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "freeport")) return cmd_freeport(atoi(argv[2]));
    if (argc >= 4 && !strcmp(argv[1], "waitlisten")) return cmd_waitlisten(atoi(argv[2]), atof(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "zero")) return cmd_zero(atoi(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "hold")) return cmd_hold(atoi(argv[2]));
    if (argc >= 6 && !strcmp(argv[1], "bulk"))
        return cmd_bulk(argv[2], atoi(argv[3]), atoll(argv[4]), atof(argv[5]));
    if (argc >= 6 && !strcmp(argv[1], "idle"))
        return cmd_idle(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]),
                        argc >= 7 ? atof(argv[6]) : IDLE_REST_DEFAULT);
    if (argc >= 3 && !strcmp(argv[1], "relay")) return cmd_relay(argc - 2, argv + 2);
    fprintf(stderr,
            "usage: tcpbench freeport N | waitlisten PORT SECS | zero PORT | hold PORT |\n"
            "       bulk ADDRS STREAMS BYTES SECS | idle ADDR N PID SECS [REST] |\n"
            "       relay LISTEN=HOST,HOST... [LISTEN=...]\n");
    return 2;
}
