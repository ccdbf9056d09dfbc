"""examples/udp_len.rs on Python's socketserver: answers each datagram with
its length, refuses one IP address, can stop itself from another thread.
Usage: python3 udp_len.py [--port 9997] [--deny IP] [--seconds N]."""
import argparse
import signal
import socketserver
import sys
import threading


class Len(socketserver.DatagramRequestHandler):
    def handle(self):
        self.wfile.write(b"%d\n" % len(self.packet))


class Server(socketserver.UDPServer):
    deny = None

    def verify_request(self, request, client_address):
        if client_address[0] == self.deny:
            print("refused %s:%d" % client_address, file=sys.stderr, flush=True)
            return False
        return True


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9997)
    parser.add_argument("--deny")
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    # SIGINT too: a shell starts background jobs with SIGINT ignored,
    # and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Server(("127.0.0.1", args.port), Len) as server:
        server.deny = args.deny
        if args.seconds is not None:
            timer = threading.Timer(args.seconds, server.shutdown)
            timer.daemon = True  # a signal does not wait for it
            timer.start()
        print("listening on %s:%d" % server.server_address, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
