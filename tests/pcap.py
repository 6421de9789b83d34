"""Read the UDP payloads out of a classic libpcap file (what SIPp ships its RTP recordings in).

A few lines of ``struct`` rather than a packet library: Ethernet (or Linux cooked capture),
IPv4 and UDP are all these files hold.
"""

from __future__ import annotations

import struct
from pathlib import Path

SIPP_SHARE = Path("/usr/share/sip-tester")
LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL = 1, 113


def udp_payloads(path: Path) -> list[bytes]:
    """The UDP payload of every IPv4 packet in the capture, in order."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    link_header = {LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16}[linktype]
    payloads, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        ip = frame[link_header:]
        if not ip or ip[0] >> 4 != 4 or ip[9] != 17:  # IPv4 carrying UDP only
            continue
        total = struct.unpack_from("!H", ip, 2)[0]
        udp = ip[(ip[0] & 0x0F) * 4 : total]
        payloads.append(bytes(udp[8 : struct.unpack_from("!H", udp, 4)[0]]))
    return payloads
