"""examples/counter.rs on Python's socketserver (a thread per client:
socketserver has no event mode): a pipelined counter. Usage: python3
counter.py [HOST:PORT] (default 127.0.0.1:9995)."""
import signal
import socketserver
import sys
import threading

MAX_LINE = 64 * 1024  # the longest line, as the Rust server's receive buffer
count, lock = 0, threading.Lock()


class Counter(socketserver.StreamRequestHandler):
    def handle(self):
        global count
        while (line := self.rfile.readline(MAX_LINE)).endswith(b"\n"):
            with lock:
                if line.strip() == b"INCR":
                    count += 1
                known = line.strip() in (b"INCR", b"GET")
                answer = b"%d\n" % count if known else b"ERR unknown command\n"
            self.wfile.write(answer)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


if __name__ == "__main__":
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9995").rsplit(":", 1)
    # SIGINT too: a shell starts background jobs with SIGINT ignored,
    # and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Server((host, int(port)), Counter) as server:
        print("listening on %s:%d" % server.server_address, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
