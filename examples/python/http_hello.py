"""examples/http_hello.rs on Python's socketserver (a thread per client:
socketserver has no event mode). Usage: python3 http_hello.py [HOST:PORT]
(default 127.0.0.1:8080)."""
import signal
import socketserver
import sys

MAX_HEAD = 8 * 1024  # the largest request head served


class Hello(socketserver.StreamRequestHandler):
    def handle(self):
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline(MAX_HEAD + 1 - len(head))
            head += line
            if not line or len(head) > MAX_HEAD:
                if line:
                    self.wfile.write(b"HTTP/1.0 431 Request Header Fields Too Large\r\n\r\n")
                return
        words = head.decode(errors="replace").splitlines()[0].split(" ")
        if len(words) == 3 and words[2].startswith("HTTP/"):
            body = b"hello, %s\n" % words[1].encode()
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n")
            self.wfile.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        else:
            self.wfile.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


if __name__ == "__main__":
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080").rsplit(":", 1)
    # SIGINT too: a shell starts background jobs with SIGINT ignored,
    # and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Server((host, int(port)), Hello) as server:
        print("listening on %s:%d" % server.server_address, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
