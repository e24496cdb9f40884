/*
 * urelay: the "floor-uring" variant of bench/compare.sh, the io_uring counterpart of
 * `tcpbench relay` (the epoll floor). Compiled only when that variant is asked for,
 * against Debian's liburing-dev (2.3 or later; kernel 6.1 or later).
 *
 *   urelay LISTEN=HOST,HOST... [LISTEN=...]      runs until killed
 *
 * Everything io_uring offers a relay: multishot accept; a multishot recv on every
 * socket, into a ring of provided 16 KiB buffers; sends from those buffers, one in
 * flight per direction; one io_uring_enter per batch of completions (single issuer,
 * deferred task work). socket, connect, shutdown and close stay system calls: the
 * descriptor numbers then never outlive their sockets in queued requests. Like the
 * epoll relay: round robin, TCP_NODELAY, no timeouts, accounting or logging. Not a
 * proxy to run.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loopback_addr.h"

#define NBUF 4096            /* provided buffers (a power of two) */
#define BUFSZ (16 * 1024)
#define BGID 0
#define NONE 0xffff          /* no buffer */
#define MAX_LISTENERS 8

/* user_data: a pointer (16-byte aligned) or a listener index, and the operation */
enum { OP_ACCEPT = 1, OP_RECV0, OP_RECV1, OP_SEND0, OP_SEND1, OP_CANCEL };

/* Received buffers wait for their send in a list per direction, linked by buffer id. */
static unsigned short next_bid[NBUF];
static int buf_off[NBUF], buf_len[NBUF];

struct dir {                 /* bytes from fd[i] to fd[1 - i] */
    unsigned short head, tail; /* buffers to send, oldest first */
    int sending;             /* a send is in flight */
    int starved;             /* the recv stopped for want of buffers */
    int read_done, done;
};

struct conn {
    int fd[2];               /* 0: client, 1: host */
    struct dir d[2];
    int inflight;            /* requests in the ring that name this connection */
    int closing;
};

struct listener {
    int fd;
    struct sockaddr_in hosts[16];
    int n, next;
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static struct listener ls[MAX_LISTENERS];
/* directions whose recv ran out of buffers, re-armed when buffers come back */
static struct conn **starved;
static int nstarved, starved_cap;

static struct io_uring_sqe *sqe_get(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) {
        io_uring_submit(&ring);
        s = io_uring_get_sqe(&ring);
    }
    return s;
}

static void tag(struct io_uring_sqe *s, struct conn *c, int op) {
    io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)c | (uint64_t)op);
}

static void arm_recv(struct conn *c, int i) {
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_recv_multishot(s, c->fd[i], NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    tag(s, c, i ? OP_RECV1 : OP_RECV0);
    c->inflight++;
}

static void give_back(unsigned short bid) {
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, bid, io_uring_buf_ring_mask(NBUF), 0);
    io_uring_buf_ring_advance(br, 1);
    while (nstarved) {       /* room again: starved recvs start over */
        struct conn *c = (struct conn *)((uintptr_t)starved[--nstarved] & ~(uintptr_t)1);
        int i = (int)((uintptr_t)starved[nstarved] & 1);
        c->inflight--;       /* the reference the starved list held */
        c->d[i].starved = 0;
        if (!c->closing) arm_recv(c, i);
    }
}

static void starve(struct conn *c, int i) {
    if (nstarved == starved_cap) {
        starved_cap = starved_cap ? 2 * starved_cap : 64;
        starved = realloc(starved, starved_cap * sizeof *starved);
        if (!starved) { perror("realloc"); exit(1); }
    }
    starved[nstarved++] = (struct conn *)((uintptr_t)c | (uintptr_t)i);
    c->d[i].starved = 1;
    c->inflight++;
}

static void send_next(struct conn *c, int i) {
    struct dir *d = &c->d[i];
    if (d->sending || d->head == NONE) return;
    unsigned short b = d->head;
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_send(s, c->fd[1 - i], bufs + (size_t)b * BUFSZ + buf_off[b], buf_len[b] - buf_off[b],
                       MSG_NOSIGNAL);
    tag(s, c, i ? OP_SEND1 : OP_SEND0);
    d->sending = 1;
    c->inflight++;
}

static void close_conn(struct conn *c) {
    if (c->closing) return;
    c->closing = 1;
    for (int k = 0; k < nstarved; k++) /* a starved direction waits no more */
        if (((uintptr_t)starved[k] & ~(uintptr_t)1) == (uintptr_t)c) {
            starved[k--] = starved[--nstarved];
            c->inflight--;
        }
    for (int i = 0; i < 2; i++) {
        if (c->d[i].read_done) continue; /* its recv has ended */
        /* by user_data, which the kernel finds in a hash; by fd would scan every request */
        struct io_uring_sqe *s = sqe_get();
        io_uring_prep_cancel64(s, (uint64_t)(uintptr_t)c | (uint64_t)(i ? OP_RECV1 : OP_RECV0), 0);
        tag(s, c, OP_CANCEL);
        c->inflight++;
    }
}

/* A direction may be finished: pass its FIN on, or close once both are. */
static void check_done(struct conn *c, int i) {
    struct dir *d = &c->d[i];
    if (d->done || !d->read_done || d->sending || d->head != NONE) return;
    d->done = 1;
    if (c->d[1 - i].done) close_conn(c);
    else shutdown(c->fd[1 - i], SHUT_WR);
}

static void on_accept(struct listener *l, int fd) {
    int host = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct conn *c = aligned_alloc(16, (sizeof *c + 15) & ~(size_t)15);
    if (host < 0 || !c) {
        close(fd);
        if (host >= 0) close(host);
        free(c);
        return;
    }
    memset(c, 0, sizeof *c);
    c->d[0].head = c->d[0].tail = c->d[1].head = c->d[1].tail = NONE;
    setsockopt(host, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in *to = &l->hosts[l->next++ % l->n];
    if (connect(host, (struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
        close(fd);
        close(host);
        free(c);
        return;
    }
    c->fd[0] = fd;
    c->fd[1] = host;
    arm_recv(c, 0);
    arm_recv(c, 1);
}

static void on_recv(struct conn *c, int i, int res, unsigned flags) {
    struct dir *d = &c->d[i];
    if (res > 0) {
        unsigned short b = (unsigned short)(flags >> IORING_CQE_BUFFER_SHIFT);
        buf_off[b] = 0;
        buf_len[b] = res;
        next_bid[b] = NONE;
        if (d->tail == NONE) d->head = b;
        else next_bid[d->tail] = b;
        d->tail = b;
        if (c->closing) return;
        send_next(c, i);
        if (!(flags & IORING_CQE_F_MORE)) arm_recv(c, i);
    } else if (res == 0) {
        d->read_done = 1;
        check_done(c, i);
    } else if (res == -ENOBUFS) {
        if (!c->closing) starve(c, i);
    } else if (res != -ECANCELED) {
        d->read_done = 1;    /* this recv has ended */
        close_conn(c);
    }
}

static void on_send(struct conn *c, int i, int res) {
    struct dir *d = &c->d[i];
    unsigned short b = d->head;
    d->sending = 0;
    if (res < 0) {
        close_conn(c);
        return;
    }
    buf_off[b] += res;
    if (buf_off[b] >= buf_len[b]) {
        d->head = next_bid[b];
        if (d->head == NONE) d->tail = NONE;
        give_back(b);
    }
    if (c->closing) return;
    send_next(c, i);
    check_done(c, i);
}

static void release(struct conn *c) {
    for (int i = 0; i < 2; i++)
        while (c->d[i].head != NONE) {
            unsigned short b = c->d[i].head;
            c->d[i].head = next_bid[b];
            give_back(b);
        }
    close(c->fd[0]);
    close(c->fd[1]);
    free(c);
}

static void arm_accept(int k) {
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_multishot_accept(s, ls[k].fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(s, ((uint64_t)k << 8) | OP_ACCEPT);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (argc < 2) {
        fprintf(stderr, "usage: urelay LISTEN=HOST,HOST... [LISTEN=...]\n");
        return 2;
    }
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = 65536;
    int r = io_uring_queue_init_params(4096, &ring, &p);
    if (r < 0) {
        fprintf(stderr, "urelay: io_uring_queue_init: %s\n", strerror(-r));
        return 1;
    }
    br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    bufs = malloc((size_t)NBUF * BUFSZ);
    if (br == MAP_FAILED || !bufs) {
        perror("urelay: buffers");
        return 1;
    }
    struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = BGID};
    if ((r = io_uring_register_buf_ring(&ring, &reg, 0)) < 0) {
        fprintf(stderr, "urelay: io_uring_register_buf_ring: %s\n", strerror(-r));
        return 1;
    }
    io_uring_buf_ring_init(br);
    for (int i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, i, io_uring_buf_ring_mask(NBUF), i);
    io_uring_buf_ring_advance(br, NBUF);
    int nl = argc - 1 > MAX_LISTENERS ? MAX_LISTENERS : argc - 1;
    for (int k = 0; k < nl; k++) {
        char spec[512], *eq, *tok, *save;
        struct sockaddr_in at;
        snprintf(spec, sizeof spec, "%s", argv[k + 1]);
        if (!(eq = strchr(spec, '=')) || (*eq = 0, parse_addr(spec, &at) < 0)) {
            fprintf(stderr, "urelay: bad spec %s\n", argv[k + 1]);
            return 2;
        }
        for (tok = strtok_r(eq + 1, ",", &save); tok && ls[k].n < 16; tok = strtok_r(NULL, ",", &save))
            if (parse_addr(tok, &ls[k].hosts[ls[k].n]) == 0) ls[k].n++;
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* accepted sockets inherit it */
        if (!ls[k].n || fd < 0 || bind(fd, (struct sockaddr *)&at, sizeof at) < 0 || listen(fd, 16384) < 0) {
            fprintf(stderr, "urelay: cannot listen on %s: %s\n", argv[k + 1], strerror(errno));
            return 1;
        }
        ls[k].fd = fd;
        arm_accept(k);
    }
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t ud = cqe->user_data;
            int op = (int)(ud & 15);
            if (op == OP_ACCEPT) {
                int k = (int)(ud >> 8);
                if (cqe->res >= 0) on_accept(&ls[k], cqe->res);
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(k);
                continue;
            }
            struct conn *c = (struct conn *)(uintptr_t)(ud & ~15ULL);
            if (!(cqe->flags & IORING_CQE_F_MORE)) c->inflight--;
            if (op == OP_RECV0 || op == OP_RECV1) on_recv(c, op == OP_RECV1, cqe->res, cqe->flags);
            else if (op == OP_SEND0 || op == OP_SEND1) on_send(c, op == OP_SEND1, cqe->res);
            if (c->closing && c->inflight == 0) release(c);
        }
        io_uring_cq_advance(&ring, seen);
    }
}
