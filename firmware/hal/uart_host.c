/*
 * The serial port of the host build (uart.h), for tests and development without a board.
 *
 * MDY_UART=tcp:PORT  listen on 127.0.0.1:PORT (0: any free port), print "listening on
 *                    127.0.0.1:N" on stderr, and serve one connection after another: like a
 *                    powered board, the engine keeps its state when the host reconnects. Talk to
 *                    it with pyserial's socket://127.0.0.1:N.
 * unset              stdin / stdout (end of input ends the program).
 * POSIX sockets; only ever bound to the loopback address.
 */
#define _POSIX_C_SOURCE 200112L

#include "uart.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int listener = -1, peer = -1;

static int accept_peer(void)
{
    do {
        peer = accept(listener, NULL, NULL);
    } while (peer < 0 && errno == EINTR);
    return peer;
}

static int open_listener(const char *spec)
{
    struct sockaddr_in address;
    socklen_t size = sizeof address;
    char *end = NULL;
    long port = strtol(spec, &end, 10);
    int one = 1;
    if (end == spec || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "error: MDY_UART=tcp:%s: the port must be a number 0..65535\n", spec);
        return -1;
    }
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) {
        perror("error: socket");
        return -1;
    }
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0
        || listen(listener, 1) != 0
        || getsockname(listener, (struct sockaddr *)&address, &size) != 0) {
        fprintf(stderr, "error: cannot listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
        return -1;
    }
    fprintf(stderr, "listening on 127.0.0.1:%u\n", (unsigned)ntohs(address.sin_port));
    fflush(stderr);
    return accept_peer() < 0 ? -1 : 0;
}

int mdy_uart_init(void)
{
    const char *spec = getenv("MDY_UART");
    signal(SIGPIPE, SIG_IGN); /* a vanished peer is an error return, not a signal */
    if (spec == NULL || spec[0] == '\0') {
        return 0;
    }
    if (strncmp(spec, "tcp:", 4) != 0) {
        fprintf(stderr, "error: MDY_UART=%s: expected tcp:PORT\n", spec);
        return -1;
    }
    return open_listener(spec + 4);
}

int mdy_uart_read(void)
{
    unsigned char byte;
    ssize_t n;
    if (listener < 0) {
        int c = getchar();
        return c == EOF ? -1 : c;
    }
    for (;;) {
        if (peer >= 0) {
            struct pollfd waiting;
            int ready;
            waiting.fd = peer;
            waiting.events = POLLIN;
            waiting.revents = 0;
            ready = poll(&waiting, 1, (int)MDY_UART_IDLE_MS);
            if (ready == 0) {
                return MDY_UART_IDLE;
            }
            if (ready < 0 && errno == EINTR) {
                continue;
            }
        }
        n = peer >= 0 ? recv(peer, &byte, 1, 0) : 0;
        if (n == 1) {
            return byte;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (peer >= 0) { /* the host hung up: wait for the next one */
            close(peer);
            peer = -1;
        }
        if (accept_peer() < 0) {
            return -1;
        }
        return MDY_UART_IDLE; /* a new host: a frame the last one left half-sent is void */
    }
}

void mdy_uart_write(const uint8_t *data, uint32_t length)
{
    if (listener < 0) {
        fwrite(data, 1, length, stdout);
        fflush(stdout);
        return;
    }
    while (length > 0 && peer >= 0) {
        ssize_t n = send(peer, data, length, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return; /* the reader notices the closed connection */
        }
        data += n;
        length -= (uint32_t)n;
    }
}
