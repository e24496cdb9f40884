/*
 * tlsbulk: the client of bench/tls_term.sh's "bulk" scenario (compiled at run time,
 * with OpenSSL): one TLS 1.3 connection to ADDR (an IPv4 literal host:port, loopback
 * only), no certificate check, reading BYTES of application data at most SECS seconds,
 * then closing. Prints "BYTES_READ SECONDS" (from the end of the handshake).
 *
 *   tlsbulk ADDR BYTES SECS
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

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: tlsbulk ADDR BYTES SECS\n"); return 2; }
    char host[64];
    const char *colon = strrchr(argv[1], ':');
    if (!colon || (size_t)(colon - argv[1]) >= sizeof host) { fprintf(stderr, "tlsbulk: bad address\n"); return 2; }
    memcpy(host, argv[1], colon - argv[1]);
    host[colon - argv[1]] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { fprintf(stderr, "tlsbulk: bad address\n"); return 2; }
    long long want = atoll(argv[2]);
    double secs = atof(argv[3]);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("tlsbulk: connect"); return 1; }
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "bench.example.com");
    if (SSL_connect(ssl) != 1) { ERR_print_errors_fp(stderr); return 1; }
    static char buf[1 << 16];
    long long got = 0;
    double start = now(), deadline = start + secs;
    while (got < want && now() < deadline) {
        int r = SSL_read(ssl, buf, sizeof buf);
        if (r <= 0) break;
        got += r;
    }
    double el = now() - start;
    printf("%lld %.4f\n", got, el);
    close(fd); /* no close_notify: the proxy sees the client go, as most do */
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return got >= want ? 0 : 1;
}
