"""A sender flooding a contact whose client does not read (docs/architecture.md "Slow
consumers"): the reader is disconnected, the flooder keeps its connection, and every message
is accounted for: received by the reader, stored offline, or bounced to the flooder.

Real sockets, plain TCP (so that a thread can read while another one writes): the reader logs
in with a small receive buffer and stops reading; the flooder writes 20,000 messages of 1.5 KB
from one thread while another reads what comes back, more slowly than it writes (~1.3 MB/s).
"""

from __future__ import annotations

import re
import socket
import threading
import time

from support import NO_ACCOUNT_RATE, RawClient, ServerProcess

FLOOD = 20_000
MESSAGE = re.compile(rb"<message ([^>]*)>(.*?)</message>", re.S)
ID = re.compile(rb'id="f(\d+)"')
BODY = re.compile(rb"<body>flood (\d+) x+</body>")
PAD = "x" * 1500  # 30 MB in all: far beyond the kernel's buffers and the reader's mailbox


class PlainClient(RawClient):
    """RawClient without TLS (the server allows it in this test)."""

    def __init__(self, server: ServerProcess, rcvbuf: int | None = None) -> None:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(10)
        self.server, self.sock, self.buffer = server, sock, b""

    def starttls(self) -> None:
        pass

    def read_quiet(self, quiet: float = 3.0, limit: float = 120) -> bytes:
        """Everything until nothing came for `quiet` seconds (or the peer closed)."""
        deadline = time.monotonic() + limit
        self.sock.settimeout(quiet)
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            self.buffer += chunk
        return self.buffer


def bodies(data: bytes) -> set[int]:
    """Numbers of the complete flood messages (not errors) in `data`."""
    found = set()
    for attrs, inner in MESSAGE.findall(data):
        if b'type="error"' not in attrs and (m := BODY.search(inner)):
            found.add(int(m.group(1)))
    return found


def bounces(data: bytes) -> set[int]:
    found = set()
    for attrs, _inner in MESSAGE.findall(data):
        if b'type="error"' in attrs and (m := ID.search(attrs)):
            found.add(int(m.group(1)))
    return found


def test_flooding_a_reader_that_stalls_loses_nothing_and_keeps_the_flooder(tmp_path) -> None:
    server = ServerProcess(
        tmp_path,
        extra_config="require_encryption = false\nallow_plain_without_tls = true\n"
        "[limits]\nbytes_per_second = 50000000\nburst_bytes = 50000000\n"
        # Archiving costs two fsyncs per message (issue 17): off, so the flood is a flood.
        '[modules.mam]\ndefault_policy = "never"\n' + NO_ACCOUNT_RATE,
    )
    server.add_user("flooder", "flooder-secret")
    server.add_user("reader", "reader-secret")
    server.start()
    try:
        reader = PlainClient(server, rcvbuf=4096)
        reader.login("reader", "reader-secret", resource="stalled")
        reader.send("<presence/>")
        time.sleep(0.5)

        flooder = PlainClient(server)
        flooder.login("flooder", "flooder-secret", resource="f")
        flooder.sock.settimeout(120)  # a timeout (not blocking): the fd is shared with `inbound`
        received = bytearray()
        stop = threading.Event()

        inbound = flooder.sock.dup()  # its own timeout: the writer blocks when paused
        inbound.settimeout(0.5)

        def read_back() -> None:
            """Reads, but slower than the flooder writes (at most ~1.3 MB/s), like a client busy
            with its own sending: what comes back for it must not outrun it."""
            while not stop.is_set():
                try:
                    chunk = inbound.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                received.extend(chunk)
                time.sleep(0.05)

        reading = threading.Thread(target=read_back, daemon=True)
        reading.start()
        cut_off = None  # how the server dropped the flooder, if it did
        try:
            for first in range(0, FLOOD, 500):
                flooder.sock.sendall(
                    "".join(
                        f"<message to='reader@localhost' type='chat' id='f{n}'>"
                        f"<body>flood {n} {PAD}</body></message>"
                        for n in range(first, first + 500)
                    ).encode()
                )
            flooder.sock.sendall(
                b"<iq type='get' id='after-flood'><ping xmlns='urn:xmpp:ping'/></iq>"
            )
            # Bounces of the reader's leftovers come from another task: wait until all is quiet.
            deadline = time.monotonic() + 180
            last = -1
            while time.monotonic() < deadline:
                time.sleep(3)
                if b"after-flood" in received and len(received) == last:
                    break
                last = len(received)
            flooder.sock.sendall(
                b"<iq type='get' id='still-here'><ping xmlns='urn:xmpp:ping'/></iq>"
            )
        except OSError as exc:
            cut_off = repr(exc)
        time.sleep(1)
        stop.set()
        reading.join(5)
        flooder_data = bytes(received)
        inbound.close()
        flooder.close()

        got_live = bodies(reader.read_quiet())
        reader.close()

        again = PlainClient(server)
        again.login("reader", "reader-secret", resource="later")
        again.send("<presence/>")
        stored = bodies(again.read_quiet())
        again.close()
    finally:
        server.stop()
    assert cut_off is None, cut_off  # the flooder kept its connection
    tail = flooder_data[-300:]
    assert b"still-here" in flooder_data and b"stream:error" not in flooder_data, tail
    bounced = bounces(flooder_data)
    counts = (len(got_live), len(stored), len(bounced))
    missing = set(range(FLOOD)) - (got_live | stored | bounced)
    assert not missing, (counts, len(missing))
    assert sum(counts) == FLOOD, counts  # each exactly once
    # Bounces are bounded: no more payload than the id (and a short body at most).
    assert max((len(m.group(0)) for m in MESSAGE.finditer(flooder_data)), default=0) < 2048, counts
    print("accounted (live, offline, bounced):", counts)
