"""examples/kv.rs on Python's socketserver: a line-based key-value store,
a thread per client (Python 3.10+: match). Usage: python3 kv.py [HOST:PORT]
(default 127.0.0.1:9998)."""
import signal
import socketserver
import sys
import threading

MAX_LINE = 256  # the longest line served, newline included
store, lock = {}, threading.Lock()


class Kv(socketserver.StreamRequestHandler):
    def handle(self):
        while line := self.rfile.readline(MAX_LINE + 1):
            if len(line) > MAX_LINE:
                while line and not line.endswith(b"\n"):
                    line = self.rfile.readline(MAX_LINE)
                answer = "ERR line too long"
            else:
                answer = self.execute(line.decode(errors="replace").rstrip("\r\n"))
            self.wfile.write(answer.encode() + b"\n")
            if answer == "BYE":
                return

    def execute(self, line):
        words = line.split(" ", 2)
        with lock:
            match words:
                case ["SET", key, value]:
                    store[key] = value
                    return "OK"
                case ["GET", key]:
                    return store.get(key, "NOT_FOUND")
                case ["DEL", key]:
                    return "OK" if store.pop(key, None) is not None else "NOT_FOUND"
                case ["QUIT"]:
                    return "BYE"
            return "ERR usage: SET key value | GET key | DEL key | QUIT"


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


if __name__ == "__main__":
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9998").rsplit(":", 1)
    # SIGINT too: a shell starts background jobs with SIGINT ignored,
    # and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Server((host, int(port)), Kv) as server:
        print("listening on %s:%d" % server.server_address, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
