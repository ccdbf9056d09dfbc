"""CPython peers of sockserv's echo server, for bench/run.

    python3 py_echo.py KIND HOST PORT [--queue N] [--buffer BYTES]

KIND: threading-tcp, forking-tcp, udp, threading-udp (socketserver, with its
defaults unless --queue raises request_queue_size), or asyncio (a Protocol
echo, backlog 100 as asyncio's default). --buffer: the stream echo's recv
size (default 16384; asyncio picks its own). Prints "listening on HOST:PORT"
first; SIGTERM ends it at once (bench/run also kills the process group, for
the forking server's children).
"""
import asyncio
import os
import signal
import socketserver
import sys


BUFFER = 16384


class StreamEcho(socketserver.BaseRequestHandler):
    """Sends every byte back until the client closes its side (as sockserv's echo)."""

    def handle(self):
        sock = self.request
        while True:
            data = sock.recv(BUFFER)
            if not data:
                return
            sock.sendall(data)


class DatagramEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def main():
    kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    queue = None
    if "--queue" in sys.argv:
        queue = int(sys.argv[sys.argv.index("--queue") + 1])
    if "--buffer" in sys.argv:
        global BUFFER
        BUFFER = int(sys.argv[sys.argv.index("--buffer") + 1])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if kind == "asyncio":
        async def serve():
            loop = asyncio.get_running_loop()
            server = await loop.create_server(EchoProtocol, host, port, backlog=queue or 100)
            print(f"listening on {host}:{port}", flush=True)
            async with server:
                await server.serve_forever()
        asyncio.run(serve())
        return
    classes = {
        "threading-tcp": (socketserver.ThreadingTCPServer, StreamEcho),
        "forking-tcp": (socketserver.ForkingTCPServer, StreamEcho),
        "udp": (socketserver.UDPServer, DatagramEcho),
        "threading-udp": (socketserver.ThreadingUDPServer, DatagramEcho),
    }
    base, handler = classes[kind]
    attrs = {}
    if queue:
        attrs["request_queue_size"] = queue
    cls = type("Bench" + base.__name__, (base,), attrs)
    with cls((host, port), handler) as server:
        print(f"listening on {host}:{port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
