/* Single-threaded epoll C echo server, the ceiling of the event model:
 *   echo_epoll HOST PORT [BUFFER]
 * BUFFER: the one read buffer in bytes (default 16384).
 * Level-triggered; a connection whose reply cannot be written whole keeps
 * the rest and waits for EPOLLOUT (reading nothing meanwhile).
 * Prints "listening on HOST:PORT" first; SIGTERM ends it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <signal.h>

struct conn { int fd; size_t off, len; char *pending; };
static char *buf;
static size_t bufsize = 16384;

static void drop(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) { fprintf(stderr, "usage: %s HOST PORT [BUFFER]\n", argv[0]); return 2; }
    if (argc == 4 && (bufsize = strtoul(argv[3], NULL, 10)) == 0) { fprintf(stderr, "bad BUFFER\n"); return 2; }
    if (!(buf = malloc(bufsize))) { perror("malloc"); return 1; }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    if (listen(s, SOMAXCONN) < 0) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    printf("listening on %s:%s\n", argv[1], argv[2]);
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(s, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event e = { .events = EPOLLIN, .data.ptr = nc };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (c->pending) { /* finish a partial write */
                ssize_t w = write(c->fd, c->pending + c->off, c->len - c->off);
                if (w < 0 && errno == EAGAIN) continue;
                if (w <= 0) { drop(ep, c); continue; }
                c->off += w;
                if (c->off == c->len) {
                    free(c->pending); c->pending = NULL;
                    struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                }
                continue;
            }
            ssize_t r = read(c->fd, buf, bufsize);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) { drop(ep, c); continue; }
            ssize_t w = write(c->fd, buf, r);
            if (w < 0 && errno == EAGAIN) w = 0;
            if (w < 0) { drop(ep, c); continue; }
            if (w < r) {
                c->pending = malloc(r - w);
                memcpy(c->pending, buf + w, r - w);
                c->off = 0; c->len = r - w;
                struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
            }
        }
    }
}
