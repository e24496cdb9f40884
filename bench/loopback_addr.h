/* bench/loopback_addr.h: the address parser tcpbench.c and urelay.c share. */
#ifndef TXLB_BENCH_LOOPBACK_ADDR_H
#define TXLB_BENCH_LOOPBACK_ADDR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* "A.B.C.D:PORT" (an IPv4 literal) into *sa; -1 if it is not one. */
static int parse_addr(const char *s, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

#endif
