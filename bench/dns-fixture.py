#!/usr/bin/env python3
"""A tiny authoritative DNS server for bench/core.sh (BENCH_CHECKS=1): loopback UDP only.

Answers the SPF and DMARC TXT records of the bench sender's domain and NXDOMAIN (with an SOA,
so resolvers cache the negative answer for an hour) for everything else, including the
DNS list lookups of 127.0.0.1. Usage: dns-fixture.py PORT SENDER_DOMAIN
"""
import socket
import struct
import sys

port, domain = int(sys.argv[1]), sys.argv[2].lower().rstrip(".")
records = {
    (domain, 16): "v=spf1 ip4:127.0.0.0/8 -all",
    ("_dmarc." + domain, 16): "v=DMARC1; p=none",
}


def name(labels):
    return b"".join(bytes([len(l)]) + l.encode() for l in labels) + b"\0"


def answer(query):
    ident, flags = struct.unpack(">HH", query[:4])
    pos, labels = 12, []
    while query[pos]:
        n = query[pos]
        labels.append(query[pos + 1:pos + 1 + n].decode("ascii", "replace").lower())
        pos += 1 + n
    qtype, _ = struct.unpack(">HH", query[pos + 1:pos + 5])
    question = query[12:pos + 5]
    txt = records.get((".".join(labels), qtype))
    rd = flags & 0x0100
    if txt is not None:
        data = txt.encode()
        rdata = bytes([len(data)]) + data
        rr = b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 3600, len(rdata)) + rdata
        head = struct.pack(">HHHHHH", ident, 0x8400 | rd, 1, 1, 0, 0)
        return head + question + rr
    soa = name(["ns", "bench", "test"]) + name(["hostmaster", "bench", "test"])
    soa += struct.pack(">IIIII", 1, 3600, 600, 86400, 3600)
    rr = b"\0" + struct.pack(">HHIH", 6, 1, 3600, len(soa)) + soa
    head = struct.pack(">HHHHHH", ident, 0x8403 | rd, 1, 0, 1, 0)
    return head + question + rr


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", port))
while True:
    q, peer = sock.recvfrom(4096)
    try:
        sock.sendto(answer(q), peer)
    except (IndexError, struct.error):
        pass
