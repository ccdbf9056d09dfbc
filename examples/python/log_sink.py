"""examples/log_sink.rs on Python's socketserver: a log sink on a Unix
datagram socket. Usage: python3 log_sink.py SOCKET_PATH LOG_FILE."""
import os
import signal
import socketserver
import sys

MAX_PACKET = 65536  # larger datagrams are not written (Rust: reported)


class Sink(socketserver.BaseRequestHandler):
    def handle(self):
        packet = self.request[0]
        if len(packet) > MAX_PACKET:
            print("datagram of over %d bytes dropped" % MAX_PACKET, file=sys.stderr)
            return
        log.write(packet.removesuffix(b"\n") + b"\n")


class Server(socketserver.UnixDatagramServer):
    max_packet_size = MAX_PACKET + 1  # to tell a larger one


if __name__ == "__main__":
    path, log_path = sys.argv[1:3]
    log = open(log_path, "ab", buffering=0)
    # SIGINT too: a shell starts background jobs with SIGINT ignored,
    # and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Server(path, Sink) as server:
        print("listening on %s" % server.server_address, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    os.unlink(path)
