/*
 * udpbench: loopback UDP helpers for bench/udp.sh (compiled at run time).
 *
 *   udpbench echo PORT          a DNS-like host on 127.0.0.1:PORT (0: any; the port is printed
 *                               first): answers each datagram with itself, the DNS "response"
 *                               bit set, so DNS proxies (dnsdist) accept it as the answer
 *   udpbench load ADDR CONC SECS
 *                               CONC client sockets (each its own source port, so each is one
 *                               session to the proxy), each sending a DNS query for
 *                               example.com and the next as soon as the answer came, for SECS
 *                               seconds; a query unanswered for 1 s counts as lost and is sent
 *                               again. Every answer must carry its query's ID. Prints JSON:
 *                               answers, lost, seconds, p50/p99 round trip (us)
 *   udpbench sessions ADDR N HOLD
 *                               N client sockets, one query and its answer each (in waves of
 *                               256, 3 tries each), then prints "ready ANSWERED" and holds the
 *                               sockets (the proxy's sessions) HOLD seconds before closing
 *
 * Every loop is bounded in count and time. Loopback only: ADDR is an IPv4 literal host:port.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

#define MAX_CONC 4096
#define MAX_SESSIONS 200000
#define SAMPLES (1 << 20)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "udpbench: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static struct sockaddr_in parse_addr(const char *text) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || colon - text >= (long)sizeof host) {
        fprintf(stderr, "udpbench: want IPV4:PORT, got %s\n", text);
        exit(2);
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "udpbench: not an IPv4 address: %s\n", host);
        exit(2);
    }
    return sa;
}

/* A DNS query for example.com, type A, class IN, recursion desired; ID in bytes 0-1. */
static const unsigned char QUERY[] = {0,    0,   0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                                      7,    'e', 'x',  'a',  'm', 'p', 'l', 'e', 3,
                                      'c',  'o', 'm',  0,    0, 1, 0, 1};

static int client_socket(const struct sockaddr_in *to) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) < 0) die("connect");
    return fd;
}

static void send_query(int fd, uint16_t id) {
    unsigned char q[sizeof QUERY];
    memcpy(q, QUERY, sizeof q);
    q[0] = (unsigned char)(id >> 8);
    q[1] = (unsigned char)id;
    (void)send(fd, q, sizeof q, 0);
}

/* ---- echo ---- */

static int cmd_echo(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    printf("%d\n", ntohs(sa.sin_port));
    unsigned char buf[65536];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("recvfrom");
        }
        if (n >= 3) buf[2] |= 0x80; /* QR: a response */
        (void)sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
    }
    return 0;
}

/* ---- load ---- */

struct client {
    int fd;
    uint16_t id;
    double sent;
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_load(const char *addr, int conc, double secs) {
    if (conc < 1 || conc > MAX_CONC || secs <= 0 || secs > 600) {
        fprintf(stderr, "udpbench: load ADDR CONC(1..%d) SECS(0..600]\n", MAX_CONC);
        return 2;
    }
    raise_nofile();
    struct sockaddr_in to = parse_addr(addr);
    struct client *cs = calloc((size_t)conc, sizeof *cs);
    double *rtt = malloc(SAMPLES * sizeof *rtt);
    if (!cs || !rtt) die("malloc");
    int ep = epoll_create1(0);
    double start = now(), end = start + secs;
    for (int i = 0; i < conc; i++) {
        cs[i].fd = client_socket(&to);
        cs[i].id = (uint16_t)(i * 7919);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        cs[i].sent = now();
        send_query(cs[i].fd, cs[i].id);
    }
    long answers = 0, lost = 0, wrong = 0, n_rtt = 0;
    struct epoll_event evs[256];
    unsigned char buf[2048];
    double next_scan = start + 0.1;
    for (double t = now(); t < end; t = now()) {
        int got = epoll_wait(ep, evs, 256, 10);
        double at = now();
        for (int k = 0; k < got; k++) {
            struct client *c = &cs[evs[k].data.u32];
            for (int reads = 0; reads < 16; reads++) {
                ssize_t n = recv(c->fd, buf, sizeof buf, 0);
                if (n < 0) break;
                if (n < 12 || ((buf[0] << 8) | buf[1]) != c->id || !(buf[2] & 0x80)) {
                    wrong++;
                    continue;
                }
                answers++;
                if (n_rtt < SAMPLES) rtt[n_rtt++] = at - c->sent;
                c->id++;
                c->sent = at;
                send_query(c->fd, c->id);
            }
        }
        if (at >= next_scan) { /* a query unanswered for 1 s is lost: send the next */
            for (int i = 0; i < conc; i++) {
                if (at - cs[i].sent < 1.0) continue;
                lost++;
                cs[i].id++;
                cs[i].sent = at;
                send_query(cs[i].fd, cs[i].id);
            }
            next_scan = at + 0.1;
        }
    }
    double took = now() - start;
    qsort(rtt, (size_t)n_rtt, sizeof *rtt, cmp_double);
    double p50 = n_rtt ? rtt[n_rtt / 2] : 0, p99 = n_rtt ? rtt[(long)(n_rtt * 0.99)] : 0;
    printf("{\"answers\": %ld, \"lost\": %ld, \"wrong\": %ld, \"secs\": %.3f, \"rps\": %.1f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f}\n",
           answers, lost, wrong, took, answers / took, p50 * 1e6, p99 * 1e6);
    return answers > 0 && wrong == 0 ? 0 : 1;
}

/* ---- sessions ---- */

static int cmd_sessions(const char *addr, int n, double hold) {
    if (n < 1 || n > MAX_SESSIONS || hold < 0 || hold > 600) {
        fprintf(stderr, "udpbench: sessions ADDR N(1..%d) HOLD(0..600)\n", MAX_SESSIONS);
        return 2;
    }
    raise_nofile();
    struct sockaddr_in to = parse_addr(addr);
    int *fds = malloc((size_t)n * sizeof *fds);
    if (!fds) die("malloc");
    long answered = 0;
    unsigned char buf[2048];
    for (int base = 0; base < n; base += 256) {
        int wave = n - base < 256 ? n - base : 256;
        char done[256] = {0};
        for (int i = 0; i < wave; i++) fds[base + i] = client_socket(&to);
        for (int attempt = 0; attempt < 3; attempt++) {
            for (int i = 0; i < wave; i++)
                if (!done[i]) send_query(fds[base + i], (uint16_t)(base + i));
            double until = now() + 1.0;
            int left = 0;
            for (int i = 0; i < wave; i++) left += !done[i];
            while (left > 0 && now() < until) {
                int progress = 0;
                for (int i = 0; i < wave; i++) {
                    if (done[i]) continue;
                    if (recv(fds[base + i], buf, sizeof buf, 0) >= 12) {
                        done[i] = 1;
                        left--;
                        answered++;
                        progress = 1;
                    }
                }
                if (!progress) usleep(200);
            }
            if (left == 0) break;
        }
    }
    printf("ready %ld\n", answered);
    double until = now() + hold;
    while (now() < until) usleep(50000);
    for (int i = 0; i < n; i++) close(fds[i]);
    return answered == n ? 0 : 1;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "echo")) return cmd_echo(atoi(argv[2]));
    if (argc >= 5 && !strcmp(argv[1], "load")) return cmd_load(argv[2], atoi(argv[3]), atof(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "sessions"))
        return cmd_sessions(argv[2], atoi(argv[3]), atof(argv[4]));
    fprintf(stderr, "usage: udpbench echo PORT | load ADDR CONC SECS | sessions ADDR N HOLD\n");
    return 2;
}
