"""Request/response latency probes for bench/net.ts (run inside each stack's namespace).

    rr.py server PORT            echo server on 127.0.0.1:PORT (host side)
    rr.py rr HOST PORT N         one connection, N 1-byte round trips
    rr.py crr HOST PORT N        N times: connect, 1-byte round trip, close

Clients print one JSON object: {"p50_us": …, "p99_us": …, "n": …}. The same
Python client runs for every stack, so its own overhead cancels in ratios.
"""
import json
import selectors
import socket
import sys
import time


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values))) - 1))]


def report(samples):
    print(json.dumps({"p50_us": pct(samples, 50) / 1000, "p99_us": pct(samples, 99) / 1000, "n": len(samples)}))


def server(port):
    sel = selectors.DefaultSelector()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1024)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is ls:
                c, _ = ls.accept()
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(4096)
                if data:
                    s.send(data)
                    continue
            except OSError:
                pass  # a client that reset mid-exchange ends only its own connection
            sel.unregister(s)
            s.close()


def rr(host, port, n):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for i in range(n + 50):
        t0 = time.perf_counter_ns()
        s.send(b"x")
        s.recv(1)
        if i >= 50:  # warm-up round trips are not counted
            samples.append(time.perf_counter_ns() - t0)
    s.close()
    report(samples)


def crr(host, port, n):
    samples = []
    for i in range(n + 20):
        t0 = time.perf_counter_ns()
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.send(b"x")
        s.recv(1)
        s.close()
        if i >= 20:
            samples.append(time.perf_counter_ns() - t0)
    report(samples)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        server(int(sys.argv[2]))
    elif mode == "rr":
        rr(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        crr(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
