"""Who opened a local connection: the uid of the process at the other end.

- Unix socket: ``SO_PEERCRED`` (man 7 unix), the credentials the kernel
  recorded at ``connect()``.
- Loopback TCP on Linux: the kernel's ``NETLINK_SOCK_DIAG`` interface (man 7
  sock_diag) looks up the client's own socket by its exact 4-tuple and says
  which uid owns it. One request and one answer, tens of microseconds; parsing
  ``/proc/net/tcp`` would read every socket of the machine per connection.

Where neither works (another OS, a netlink socket refused by a sandbox), the
answer is ``None`` and the caller falls back to a local password.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import sys

__all__ = ["NETLINK_AVAILABLE", "is_loopback", "tcp_peer_uid", "unix_peer_uid"]

log = logging.getLogger("rsauth.proxy")

# linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLMSG_ERROR = 2
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
# struct nlmsghdr: length, type, flags, sequence, port id (host byte order).
_NLMSGHDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2 without its sockid: family, protocol, extensions, pad, states.
_REQ_HEAD = struct.Struct("=BBBxI")
# struct inet_diag_sockid: ports and addresses in network byte order, then if and cookie.
_SOCKID = struct.Struct("!HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
# struct inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires,
# rqueue, wqueue, uid, inode; the uid is at offset 4 + 48 + 12.
_UID_OFFSET = 64
_UID = struct.Struct("=I")
_ERRNO = struct.Struct("=i")
_UCRED = struct.Struct("=iII")


def _netlink_available() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(socket, "AF_NETLINK"):
        return False
    try:
        probe = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except OSError:
        return False
    probe.close()
    return True


NETLINK_AVAILABLE = _netlink_available()


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def unix_peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process that connected ``sock`` (a Unix stream socket), if known."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    _, uid, _ = _UCRED.unpack(raw)
    return int(uid)


def _packed_address(family: int, address: str) -> bytes:
    packed = socket.inet_pton(family, address)
    return packed.ljust(16, b"\0")


def tcp_peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the client end of ``sock`` (an accepted TCP socket), if on this host.

    The request names the client's socket exactly: its local end is our peer
    address, its remote end our own address (inet_diag_find_one_icsk looks it
    up as a received packet would be).
    """
    if not NETLINK_AVAILABLE:
        return None
    family = sock.family
    try:
        local = sock.getsockname()
        peer = sock.getpeername()
        sockid = _SOCKID.pack(
            peer[1], local[1], _packed_address(family, peer[0]), _packed_address(family, local[0])
        ) + _SOCKID_TAIL.pack(0, _INET_DIAG_NOCOOKIE, _INET_DIAG_NOCOOKIE)
        body = _REQ_HEAD.pack(family, socket.IPPROTO_TCP, 0, _ALL_STATES) + sockid
        request = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0
        ) + body
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
            diag.settimeout(1.0)
            diag.sendto(request, (0, 0))
            answer = diag.recv(8192)
    except OSError as exc:
        log.debug("sock_diag lookup failed: %s", exc)
        return None
    if len(answer) < _NLMSGHDR.size:
        return None
    _, kind, _, _, _ = _NLMSGHDR.unpack_from(answer)
    if kind == _NLMSG_ERROR:
        errno = -_ERRNO.unpack_from(answer, _NLMSGHDR.size)[0]
        log.debug("sock_diag found no local socket for the peer (%s)", os.strerror(errno))
        return None
    if kind != _SOCK_DIAG_BY_FAMILY or len(answer) < _NLMSGHDR.size + _UID_OFFSET + 4:
        return None
    return int(_UID.unpack_from(answer, _NLMSGHDR.size + _UID_OFFSET)[0])
