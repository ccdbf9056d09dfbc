"""examples/chat.rs on Python's socketserver: a chat room, a thread per
client; every line goes to every other client. Usage: python3 chat.py
[HOST:PORT] (default 127.0.0.1:9996)."""
import signal
import socketserver
import sys
import threading

MAX_LINE = 1024  # the longest line relayed, newline included
members, lock = {}, threading.Lock()


class Chat(socketserver.StreamRequestHandler):
    def handle(self):
        with lock:
            members[self] = self.wfile
        try:
            while (line := self.rfile.readline(MAX_LINE + 1)) and len(line) <= MAX_LINE:
                self.broadcast(line)
        finally:
            with lock:
                members.pop(self, None)

    def broadcast(self, line):
        with lock:
            for member, wfile in list(members.items()):
                if member is not self:
                    try:
                        wfile.write(line)
                    except OSError:
                        del members[member]


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


if __name__ == "__main__":
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9996").rsplit(":", 1)
    # SIGINT too: a shell starts background jobs with SIGINT ignored,
    # and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Server((host, int(port)), Chat) as server:
        print("listening on %s:%d" % server.server_address, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
