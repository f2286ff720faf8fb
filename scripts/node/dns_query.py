#!/usr/bin/env python3
"""Asks a DNS server for a name's A record over UDP; exits 0 if the answer holds
the expected address. Usage: dns_query.py SERVER NAME EXPECTED (2 s timeout)."""
import socket
import struct
import sys

server, name, expected = sys.argv[1:4]
query = struct.pack(">HHHHHH", 0x5347, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2)
sock.sendto(query, (server, 53))
reply = sock.recv(4096)
answers = struct.unpack(">H", reply[6:8])[0]
sys.exit(0 if answers >= 1 and socket.inet_aton(expected) in reply[len(query):] else 1)
