"""Run the sandbox in the foreground: ``python -m rsauth.sandbox``.

Prints the environment that points boto3 and redshift_connector at it as
``export`` lines, then serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import threading
from types import FrameType

from rsauth.sandbox._server import SandboxServer


def _parse(argv: list[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run a local stand-in for Amazon Redshift Serverless (PostgreSQL behind a TLS "
            "front, the redshift-serverless API, and moto for STS, IAM, Secrets Manager and "
            "S3), all on 127.0.0.1. Prints the environment variables to use it, then serves "
            "until Ctrl-C or SIGTERM."
        ),
        epilog="Run it in one terminal, paste the export lines into another, then run "
        "your code there. The admin API address it prints (a secret token in its path) "
        "takes fault-injection commands as JSON POSTs.",
    )
    parser.add_argument("--seed", type=int, help="seed for fault injection, so runs repeat")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the sandbox's own messages (default: WARNING)",
    )
    parser.add_argument(
        "--no-enforce-iam",
        dest="enforce_iam",
        action="store_false",
        help="do not evaluate IAM policies (signatures are still verified); by default "
        "identity-based and trust policies decide calls as on AWS",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _set_on_eof(stop: threading.Event) -> None:
    sys.stdin.read()
    stop.set()


def main(argv: list[str] | None = None, prog: str = "python -m rsauth.sandbox") -> int:
    """Serve the sandbox until stopped; ``prog`` is the command's name in its help."""
    args = _parse(argv, prog)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = SandboxServer(seed=args.seed, enforce_iam=args.enforce_iam)
    try:
        server.start()
        facts = server.describe()
        if args.child:
            # The parent reads one JSON line, then holds our stdin: EOF means "stop".
            print(json.dumps(facts), flush=True)
            threading.Thread(target=_set_on_eof, args=(stop,), daemon=True).start()
        else:
            print("# rsauth sandbox is running. Paste these lines into another shell:")
            for key, value in facts["env"].items():
                print(f"export {key}={shlex.quote(value)}")
            print(
                f"# workgroup {facts['workgroup']}, namespace {facts['namespace']}, "
                f"database {facts['database']}, endpoint {facts['host']}:{facts['port']}"
            )
            # The URL holds the admin API's token: whoever has it can run SQL as superuser.
            print(
                f"# admin API: {facts['admin_url']}  (POST <admin API>/<operation>, "
                "Content-Type: application/json)"
            )
            print("# Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
