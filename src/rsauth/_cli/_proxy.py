"""``rsauth proxy``: run :class:`rsauth.proxy.Proxy` in the foreground.

The first line on stdout says where it listens; then one line per client
session. SIGINT or SIGTERM stops accepting, lets open sessions finish for
``--drain`` seconds, then closes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from rsauth._broker import Broker
from rsauth._cli._context import COMMON_OPTIONS, UsageError, cli_wording
from rsauth._config import METHODS
from rsauth._errors import ConfigurationError

__all__ = ["PROXY_EPILOG", "PROXY_SUMMARY", "run_proxy"]

PROXY_SUMMARY = "a local proxy: any PostgreSQL client connects without a password"

PROXY_EPILOG = """\
examples:
  rsauth proxy --workgroup analytics
  psql "host=127.0.0.1 port=5439 dbname=dev sslmode=disable"
  rsauth proxy --workgroup analytics=5439 --workgroup reporting=5440
  rsauth proxy --workgroup analytics --unix-socket ~/.rsauth-proxy --port 5439
  psql "host=$HOME/.rsauth-proxy port=5439 dbname=dev"

Clients connect with any user name and no password; each session logs in as
the brokered user (IAM, the secret or the superuser role), for the database the
client names. Only the user who started the proxy may connect (checked by uid on
loopback and Unix sockets); where the uid cannot be checked, or --address is not
loopback, clients must send the local password. Ctrl-C or SIGTERM drains
(--drain) and stops."""

_SKIPPED = {"workgroup"}  # repeatable here: NAME[=PORT]


def build_proxy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsauth proxy",
        description=PROXY_SUMMARY[0].upper() + PROXY_SUMMARY[1:] + ".",
        epilog=PROXY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("login options (as for rsauth.connect)")
    group.add_argument(
        "--workgroup",
        action="append",
        metavar="NAME[=PORT]",
        help="workgroup to proxy, repeatable, each on its own port "
        "(default: $RSAUTH_WORKGROUP on --port)",
    )
    for name, text in COMMON_OPTIONS:
        if name in _SKIPPED:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "method":
            group.add_argument(flag, choices=[m for m in METHODS if m != "password"], help=text)
        else:
            metavar = {"duration": "SECONDS", "custom_domain": "DOMAIN"}.get(name, name.upper())
            group.add_argument(flag, dest=name, metavar=metavar, help=text)
    group.add_argument(
        "--db-roles",
        metavar="ROLE[,ROLE]",
        help="database roles for an iam login with --role-arn (default: $RSAUTH_DB_ROLES)",
    )
    local = parser.add_argument_group("where clients connect")
    local.add_argument(
        "--address", default="127.0.0.1", help="TCP address to listen on (default: 127.0.0.1)"
    )
    local.add_argument(
        "--port", type=int, default=5439, help="TCP port (default: 5439; 0 picks a free port)"
    )
    local.add_argument(
        "--no-tcp", action="store_true", help="no TCP listener (with --unix-socket)"
    )
    local.add_argument(
        "--unix-socket",
        metavar="DIR",
        help="also listen on DIR/.s.PGSQL.PORT (DIR made 0700); psql -h DIR -p PORT",
    )
    local.add_argument(
        "--no-local-tls",
        action="store_true",
        help="answer N to clients asking for TLS (by default they get a per-run certificate)",
    )
    local.add_argument(
        "--local-password-file",
        metavar="FILE",
        help="the password clients must send where their uid cannot be checked "
        "(default: a random one, written to a 0600 file named on startup)",
    )
    local.add_argument(
        "--allow-any-local-user",
        action="store_true",
        help="let in every local user, not only the one running the proxy (a WARNING)",
    )
    local.add_argument(
        "--drain",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, let open sessions finish for this long (default: 10)",
    )
    local.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help="serve /liveness, /readiness and /metrics on 127.0.0.1:PORT (default: off)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="log rsauth's DEBUG lines to stderr"
    )
    return parser


def _targets(args: argparse.Namespace) -> list[tuple[str | None, int]]:
    """(workgroup, port) pairs; ``None``: the workgroup from the environment."""
    if not args.workgroup:
        return [(None, args.port)]
    targets: list[tuple[str | None, int]] = []
    for index, entry in enumerate(args.workgroup):
        name, _, port = entry.partition("=")
        if port:
            try:
                number = int(port)
            except ValueError:
                raise UsageError(
                    f"--workgroup {entry}: the port after '=' must be a number"
                ) from None
        elif index == 0:
            number = args.port
        else:
            raise UsageError(
                f"--workgroup {entry}: give each further workgroup its own port "
                "(--workgroup NAME=PORT)"
            )
        targets.append((name, number))
    ports = [port for _, port in targets if port]
    if len(ports) != len(set(ports)):
        raise UsageError("--workgroup: two workgroups on one port; give each its own port")
    return targets


def run_proxy(argv: Sequence[str]) -> int:
    from rsauth.proxy import HealthServer, Proxy, SessionRecord

    args = build_proxy_parser().parse_args(list(argv))
    targets = _targets(args)
    settings: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "custom_domain", "database", "method", "duration", "secret_id", "role_arn",
            "region", "profile", "db_roles",
        )
        if getattr(args, name) is not None
    }
    if args.drain < 0:
        raise UsageError(f"--drain {args.drain:g}: expected seconds, 0 or more")

    def print_session(record: SessionRecord) -> None:
        print(f"rsauth proxy: {record.line()}", flush=True)

    broker = Broker()
    proxies: list[Proxy] = []
    health: HealthServer | None = None
    stop = threading.Event()
    try:
        for workgroup, port in targets:
            target: dict[str, Any] = {"workgroup": workgroup} if workgroup else {}
            try:
                proxy = Proxy(
                    **settings,
                    **target,
                    address=None if args.no_tcp else args.address,
                    port=port,
                    unix_socket=args.unix_socket,
                    local_tls=not args.no_local_tls,
                    local_password_file=args.local_password_file,
                    allow_any_local_user=args.allow_any_local_user,
                    drain=args.drain,
                    broker=broker,
                    on_session=print_session,
                )
            except ConfigurationError as exc:
                raise UsageError(cli_wording(str(exc))) from exc
            proxies.append(proxy.start())
        for proxy in proxies:
            many = f" ({proxy.name})" if len(proxies) > 1 else ""
            for line in proxy.describe():
                print(f"rsauth proxy: {line}{many}", flush=True)
        if args.http_port is not None:
            health = HealthServer(proxies, port=args.http_port).start()
            print(
                f"rsauth proxy: health and metrics on http://127.0.0.1:{health.port}/",
                flush=True,
            )

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {
            sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while not stop.wait(3600):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print(
            f"rsauth proxy: stopping; open sessions may finish for {args.drain:g} s",
            flush=True,
        )
    finally:
        if health is not None:
            health.close()
        closers = [
            threading.Thread(target=proxy.close, name=f"rsauth-proxy-close-{proxy.name}")
            for proxy in proxies
        ]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
        broker.close()
    print("rsauth proxy: stopped", flush=True)
    sys.stdout.flush()
    return 0
