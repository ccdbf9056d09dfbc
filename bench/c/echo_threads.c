/* Blocking C echo servers, the ceiling of the blocking models:
 *   echo_threads threads HOST PORT [BUFFER]   one detached thread per connection
 *   echo_threads sync HOST PORT [BUFFER]      one connection at a time (iterative)
 *   echo_threads udp HOST PORT                one datagram at a time, sent back whole
 * BUFFER: the read buffer of a stream connection in bytes (default 16384),
 * on the heap (the threads' stacks are 64 KiB).
 * Prints "listening on HOST:PORT" first; SIGTERM ends it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include <signal.h>

static size_t bufsize = 16384;

static void serve_conn(int fd) {
    char *buf = malloc(bufsize);
    if (!buf) goto out;
    for (;;) {
        ssize_t n = read(fd, buf, bufsize);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, n - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) goto out;
            off += w;
        }
    }
out:
    free(buf);
    close(fd);
}

static void *thread_main(void *arg) {
    serve_conn((int)(long)arg);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) { fprintf(stderr, "usage: %s threads|sync|udp HOST PORT [BUFFER]\n", argv[0]); return 2; }
    if (argc == 5 && (bufsize = strtoul(argv[4], NULL, 10)) == 0) { fprintf(stderr, "bad BUFFER\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    int udp = strcmp(argv[1], "udp") == 0, threads = strcmp(argv[1], "threads") == 0;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    if (!udp && listen(s, SOMAXCONN) < 0) { perror("listen"); return 1; }
    printf("listening on %s:%s\n", argv[2], argv[3]);
    fflush(stdout);
    if (udp) {
        char buf[65536];
        for (;;) {
            struct sockaddr_storage peer; socklen_t pl = sizeof peer;
            ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &pl);
            if (n < 0) continue;
            sendto(s, buf, n, 0, (struct sockaddr *)&peer, pl);
        }
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (!threads) { serve_conn(c); continue; }
        pthread_t t;
        if (pthread_create(&t, &attr, thread_main, (void *)(long)c) != 0) close(c);
    }
}
