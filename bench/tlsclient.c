/*
 * tlsclient: the OpenSSL clients of bench/tls_term.sh (compiled at run time, loopback
 * only: ADDR is an IPv4 literal host:port; TLS 1.3, SNI bench.example.com, no
 * certificate check).
 *
 *   tlsclient bulk ADDR BYTES SECS
 *       one connection reading BYTES of application data, at most SECS seconds, then
 *       closing; prints "BYTES_READ SECONDS" (from the end of the handshake).
 *   tlsclient resume ADDR SECS
 *       one connection after another for SECS seconds, each resuming the session of
 *       the one before (from the ticket it received), sending one HTTP request with
 *       "Connection: close" and reading the answer to its end; prints
 *       "CONNECTIONS RESUMED" (the first is a full handshake).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* The address in "host:port" into sa; 0 on success. */
static int parse(const char *addr, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return -1;
    memcpy(host, addr, colon - addr);
    host[colon - addr] = 0;
    *sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* A connected TLS client (resuming `session` if not NULL), or NULL. */
static SSL *connect_tls(SSL_CTX *ctx, const struct sockaddr_in *sa, SSL_SESSION *session) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0) {
        perror("tlsclient: connect");
        if (fd >= 0) close(fd);
        return NULL;
    }
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "bench.example.com");
    if (session) SSL_set_session(ssl, session);
    if (SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

/* Closes without close_notify (the proxy sees the client go, as most do), keeping
 * the session resumable: OpenSSL spoils a session freed without a shutdown. */
static void drop(SSL *ssl) {
    int fd = SSL_get_fd(ssl);
    SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
    close(fd);
}

static char buf[1 << 16];

static int cmd_bulk(const struct sockaddr_in *sa, SSL_CTX *ctx, long long want, double secs) {
    SSL *ssl = connect_tls(ctx, sa, NULL);
    if (!ssl) return 1;
    long long got = 0;
    double start = now(), deadline = start + secs;
    while (got < want && now() < deadline) {
        int r = SSL_read(ssl, buf, sizeof buf);
        if (r <= 0) break;
        got += r;
    }
    printf("%lld %.4f\n", got, now() - start);
    drop(ssl);
    return got >= want ? 0 : 1;
}

static int cmd_resume(const struct sockaddr_in *sa, SSL_CTX *ctx, double secs) {
    static const char request[] = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    SSL_SESSION *session = NULL;
    long conns = 0, resumed = 0;
    double deadline = now() + secs;
    while (now() < deadline && conns < 10000000) {
        SSL *ssl = connect_tls(ctx, sa, session);
        if (!ssl) return 1;
        conns++;
        resumed += SSL_session_reused(ssl);
        if (SSL_write(ssl, request, sizeof request - 1) <= 0) { drop(ssl); return 1; }
        while (SSL_read(ssl, buf, sizeof buf) > 0) {} /* the answer, and the tickets before it */
        SSL_SESSION *next = SSL_get1_session(ssl);
        if (next) {
            SSL_SESSION_free(session);
            session = next;
        }
        drop(ssl);
    }
    SSL_SESSION_free(session);
    printf("%ld %ld\n", conns, resumed);
    return 0;
}

int main(int argc, char **argv) {
    struct sockaddr_in sa;
    if (argc < 3 || parse(argv[2], &sa) != 0) {
        fprintf(stderr, "usage: tlsclient bulk ADDR BYTES SECS | resume ADDR SECS\n");
        return 2;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    int rc = 2;
    if (argc == 5 && !strcmp(argv[1], "bulk")) rc = cmd_bulk(&sa, ctx, atoll(argv[3]), atof(argv[4]));
    else if (argc == 4 && !strcmp(argv[1], "resume")) rc = cmd_resume(&sa, ctx, atof(argv[3]));
    else fprintf(stderr, "usage: tlsclient bulk ADDR BYTES SECS | resume ADDR SECS\n");
    SSL_CTX_free(ctx);
    return rc;
}
