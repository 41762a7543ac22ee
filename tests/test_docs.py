"""The docs' promises: every example runs, every policy is the generated one, every link
of the README leads somewhere.

The docs site itself is built by ``make docs`` (``mkdocs build --strict``), which checks
the links between pages, the docstrings of the public names and the CLI reference.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from markdown.extensions.toc import slugify
from mkdocs.exceptions import PluginError

import rsauth
from rsauth._policies import Target, assume_role_policy, login_policy, trust_policy
from rsauth.sandbox import Sandbox
from rsauth.sandbox._server import _AWS_SERVICES
from tests import conftest
from tests._iam import allow, make_role, trust
from tests.fleet.conftest import RedisServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```$", re.M | re.S)


def _blocks(page: Path, language: str) -> list[tuple[int, str]]:
    """Each fenced block of ``language`` on the page: its first line's number, its text."""
    text = page.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start(2)) + 1, match[2])
        for match in _FENCE.finditer(text)
        if match[1] == language
    ]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- every example runs -------------------------------------------------------------------

_INCLUDE = re.compile(r'^--8<-- "(examples/[\w/]+\.py)(?::[\w-]+)?"$')


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_python_block_is_an_included_example(page: Path) -> None:
    """A ``python`` block only includes a file under examples/; the rest is ``pycon``,
    run below as a doctest."""
    for line, block in _blocks(page, "python"):
        for statement in block.strip().splitlines():
            included = _INCLUDE.match(statement)
            assert included, (
                f"{_page_id(page)}:{line}: a python block that nobody runs; make it a pycon "
                "doctest or include a file under examples/ that a test runs"
            )
            assert (ROOT / included[1]).is_file(), f"{_page_id(page)}:{line}: {included[1]}"


def test_every_example_is_run_by_a_test() -> None:
    tests = "\n".join(path.read_text(encoding="utf-8") for path in ROOT.glob("tests/**/*.py"))
    for example in sorted(EXAMPLES.glob("*.py")):
        assert f'"{example.name}"' in tests, f"no test runs examples/{example.name}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("quickstart.py", "cache: 103 hits, 3 misses"),
        ("etl_copy.py", "UNLOAD: 5 rows to s3://acme-etl/reports/daily_revenue_000"),
        ("sandbox_login.py", "as IAM:sandbox-admin (superuser: True)"),
        ("metrics_otel.py", "rsauth.cache.hits [('tier', 'process')] = 1"),
    ],
)
def test_the_examples_that_start_their_own_sandbox_run(example: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / example)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


# -- the doctests: every pycon block, run against a sandbox ---------------------------------

# What the examples meet: a workgroup "analytics" whose database has a table of sales, and
# what a platform team sets up for ETL (the role etl-job as the namespace's default IAM
# role, a bucket with a CSV, a schema the role owns) and for admin jobs (a role whose
# database user is a superuser). Your identity is the sandbox's IAM user sandbox-admin.
WORKGROUP = "analytics"
BUCKET = "acme-etl"
SALES_COLUMNS = (
    "sale_id int, region varchar(8), customer varchar(40), amount numeric(10,2), sold_on date"
)
SALES_CSV = '''\
sale_id,region,customer,amount,sold_on
1,EU,"Müller, Anna",120.50,2024-06-01
2,US,O'Brien,75.00,2024-06-01
3,EU,Dupont,30.25,2024-06-02
4,APAC,"Tanaka ""Ken""",210.00,2024-06-02
5,US,Smith,,2024-06-02
'''


def _set_up(sb: Sandbox) -> None:
    plane = boto3.client("redshift-serverless")
    plane.create_namespace(namespaceName=WORKGROUP, manageAdminPassword=True)
    plane.create_workgroup(workgroupName=WORKGROUP, namespaceName=WORKGROUP)
    etl_role = make_role(
        "etl-job",
        allow(["redshift-serverless:GetWorkgroup", "redshift-serverless:GetCredentials",
               "redshift-serverless:GetNamespace"]),
        allow(["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
              [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]),
        trust_policy=trust(services=["redshift-serverless.amazonaws.com"]),
    )
    # Both: the sandbox's namespaces share the database dev, and its COPY reads the first
    # namespace's roles (docs/sandbox.md, "Limits of the stand-in").
    for namespace in (WORKGROUP, sb.namespace):
        plane.update_namespace(namespaceName=namespace, iamRoles=[etl_role],
                               defaultIamRoleArn=etl_role)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="incoming/sales/2024-06-02.csv", Body=SALES_CSV.encode())
    kms = boto3.client("kms")
    kms.create_alias(AliasName="alias/rsauth-fleet",
                     TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    admin_role = make_role("RedshiftAdmin")
    with rsauth.Broker() as broker:
        broker.connect(workgroup=WORKGROUP, role_arn=admin_role).close()
        sb.sql('alter role "IAMR:RedshiftAdmin" superuser')
        broker.connect(workgroup=WORKGROUP, role_arn=etl_role).close()
        with broker.connect(workgroup=WORKGROUP) as admin:
            cursor = admin.cursor()
            cursor.execute(f"create table sales ({SALES_COLUMNS})")
            cursor.execute(
                "insert into sales values (1, 'EU', 'Müller, Anna', 120.50, '2024-06-01'), "
                "(2, 'US', 'O''Brien', 75.00, '2024-06-01'), (3, 'EU', 'Dupont', 30.25, "
                "'2024-06-02'), (4, 'APAC', 'Tanaka', 210.00, '2024-06-02'), "
                "(5, 'US', 'Smith', null, '2024-06-02')"
            )
            cursor.execute('create schema etl authorization "IAMR:etl-job"')
            admin.commit()
        with broker.connect(workgroup=WORKGROUP, role_arn=etl_role) as job:
            job.cursor().execute(f"create table etl.sales ({SALES_COLUMNS})")
            job.commit()


class _Environment:
    """``os.environ`` as a sandbox's, restored afterwards (module scope: no monkeypatch)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {
            **env,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def __enter__(self) -> None:
        self.saved = dict(os.environ)
        os.environ.update(self.env)

    def __exit__(self, *exc: object) -> None:
        os.environ.clear()
        os.environ.update(self.saved)


@pytest.fixture(scope="module")
def docs_sandbox() -> Iterator[Sandbox]:
    """A sandbox of its own: the workgroup and tables the examples use stay out of the
    shared one, whose tests count its workgroups."""
    with Sandbox(seed=22) as sb:
        conftest._STARTED.append(sb)
        # boto3's default session keeps the credentials it first found: an earlier test's.
        earlier = boto3.DEFAULT_SESSION
        boto3.DEFAULT_SESSION = None
        try:
            with _Environment(sb.env):
                _set_up(sb)
            yield sb
        finally:
            boto3.DEFAULT_SESSION = earlier
            conftest._STARTED.remove(sb)


DOCTEST_PAGES = [page for page in PAGES if _blocks(page, "pycon")]


@pytest.mark.parametrize("page", DOCTEST_PAGES, ids=_page_id)
def test_the_doctests_run(
    page: Path, docs_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each page's pycon blocks in order, one namespace per page, as a reader runs them:
    in a process of its own, whose boto3 default session (and its credentials) is new."""
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    names: dict[str, object] = {}
    env = dict(docs_sandbox.env)
    with contextlib.ExitStack() as stack:
        if page.name == "fleet.md":  # fleet mode's examples meet a real Redis
            binary = shutil.which("redis-server")
            if binary is None:
                pytest.skip("redis-server is not installed (make test provides it)")
            redis = RedisServer(binary).start()
            stack.callback(redis.cleanup)
            env["REDIS_URL"] = redis.url
        _run_doctests(page, env, runner, report, names)
    assert runner.failures == 0, "".join(report)


def _run_doctests(
    page: Path, env: dict[str, str], runner: doctest.DocTestRunner, report: list[str],
    names: dict[str, object],
) -> None:
    parser = doctest.DocTestParser()
    with _Environment(env), warnings.catch_warnings():
        # pandas warns that it tests only SQLAlchemy and sqlite3 connections; the docs
        # say so, and the query runs.
        warnings.filterwarnings(
            "ignore", "pandas only supports SQLAlchemy connectable", UserWarning
        )
        try:
            for line, block in _blocks(page, "pycon"):
                test = parser.get_doctest(block, names, f"{_page_id(page)}:{line}", str(page),
                                          line - 1)
                runner.run(test, out=report.append, clear_globs=False)
                names = test.globs  # the next block goes on where this one ended
        finally:
            # A sandbox a page starts is stopped even when an example before its stop()
            # failed (stop() again does nothing).
            for value in names.values():
                if isinstance(value, Sandbox):
                    value.stop()


# -- the policies and the sandbox's variables ----------------------------------------------


def test_the_sandbox_env_list_names_every_endpoint_variable() -> None:
    text = (DOCS / "sandbox.md").read_text(encoding="utf-8")
    start = text.index("`sb.env` holds")
    paragraph = text[start : text.index("\n\n", start)]
    named = set(re.findall(r"`(?:AWS_ENDPOINT_URL)?(_[A-Z0-9_]+)`", paragraph))
    assert named >= {f"_{service}" for service in _AWS_SERVICES}


# The IAM policies of docs/login-methods.md, each rendered from rsauth._policies: the same
# source the tests in tests/integration/test_minimal_policies.py log in under.
EXAMPLE = Target(region="eu-west-1", account="123456789012")
EXAMPLE_KEY = "arn:aws:kms:eu-west-1:123456789012:key/<key-id>"
DOCUMENTED_POLICIES = {
    "iam": login_policy("iam", EXAMPLE),
    "iam-custom-domain": login_policy("iam", EXAMPLE, custom_domain=True),
    "assume-role": assume_role_policy(
        "arn:aws:iam::123456789012:role/RedshiftAdmin", db_roles=True
    ),
    "trust": trust_policy("arn:aws:iam::123456789012:root", db_roles=True),
    "secret": login_policy("secret", EXAMPLE),
    "secret-id": login_policy(
        "secret",
        EXAMPLE,
        secret_arn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:analytics/etl-*",
        kms_key_arn=EXAMPLE_KEY,
    ),
    "etl": login_policy("iam", EXAMPLE, etl=True),
    "fleet-kms": login_policy("iam", EXAMPLE, fleet_kms_key_arn=EXAMPLE_KEY),
    "lambda-iam": login_policy("iam", EXAMPLE),
}
_POLICY_BLOCK = re.compile(r"<!-- policy: ([a-z-]+) -->\n```json\n(.*?)\n```", re.S)


def test_the_documented_policies_are_the_generated_ones() -> None:
    found: dict[str, str] = {}
    for page in PAGES:
        for name, block in _POLICY_BLOCK.findall(page.read_text(encoding="utf-8")):
            assert name not in found, f"policy {name!r} is shown twice"
            found[name] = block
    assert set(found) == set(DOCUMENTED_POLICIES), "every generated policy is in the docs, once"
    for name, block in found.items():
        expected = json.dumps(DOCUMENTED_POLICIES[name], indent=2)
        assert block == expected, f"policy {name!r} differs; it should read:\n{expected}"


# -- the README's links (the site's own are checked by mkdocs build --strict) ---------------

_LINK = re.compile(r"\]\((?!https?://|mailto:)([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slugify(title, "-") for title in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)}


def test_the_readme_links_lead_somewhere() -> None:
    readme = ROOT / "README.md"
    for target in _LINK.findall(readme.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        page = (ROOT / path) if path else readme
        assert page.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(page), f"README.md links to {target}: no such heading"


# -- the build's own checks (docs/hooks.py), which make docs runs --------------------------


def _hooks() -> Any:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_has_a_docstring_and_a_place_in_the_reference() -> None:
    hooks = _hooks()
    assert hooks.undocumented() == []
    assert hooks.unreferenced_modules() == []


def test_the_docstring_check_finds_what_is_missing(tmp_path: Path) -> None:
    package = tmp_path / "rsauth"
    (package / "tools").mkdir(parents=True)
    (package / "_private").mkdir()
    (package / "__init__.py").write_text(
        '"""A package."""\n__all__ = ["Thing", "LIMIT", "helper"]\n'
        'LIMIT = 3\n"""How many."""\n'
        "def helper() -> None:\n    pass\n"
        'class Thing:\n    """A thing."""\n'
        "    def run(self) -> None:\n        pass\n"
        "    def _inner(self) -> None:\n        pass\n"
        "    @property\n    def size(self) -> int:\n        return 1\n"
    )
    (package / "tools" / "__init__.py").write_text('__all__ = ["x"]\nx = 1\n')
    (package / "_private" / "__init__.py").write_text('__all__ = ["y"]\ny = 1\n')
    assert sorted(_hooks().undocumented(tmp_path)) == [
        "rsauth.Thing.run", "rsauth.Thing.size", "rsauth.helper", "rsauth.tools",
        "rsauth.tools.x",
    ]


def test_the_cli_reference_is_each_commands_help() -> None:
    hooks = _hooks()
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    rendered = hooks.render_cli_help(page)
    for command in hooks.commands():
        assert f"$ {command} --help\n{hooks.command_help(command)}\n```" in rendered
    assert "usage: rsauth copy" in hooks.command_help("rsauth copy")
    assert "usage: rsauth sandbox" in hooks.command_help("rsauth sandbox")
    without_copy = page.replace("<!-- help: rsauth copy -->\n", "")
    with pytest.raises(PluginError, match="no help marker for: rsauth copy"):
        hooks.render_cli_help(without_copy)


def _make_docs_command() -> str:
    """The command ``make docs`` runs, as the Makefile spells it, with this venv's bin."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    command = re.search(r"^MKDOCS := (.+)$", makefile, re.M)
    assert command is not None
    return command[1].replace("$(BIN)", str(Path(sys.executable).parent))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "old", "new", "complaint"),
    [
        ("docs/fleet.md", "](caching.md)", "](cachin.md)", "'cachin.md', but the target"),
        ("docs/sandbox.md", "login-methods.md#the-minimal-iam-policy-for-each-method",
         "login-methods.md#no-such-heading", "does not contain an anchor '#no-such-heading'"),
        ("src/rsauth/sandbox/__init__.py", '"""Undo :meth:`deny` for an identity."""', "",
         "public names without a docstring: rsauth.sandbox.Sandbox.allow"),
    ],
    ids=["link", "anchor", "docstring"],
)
def test_make_docs_fails_on_a_broken_link_or_a_missing_docstring(
    tmp_path: Path, path: str, old: str, new: str, complaint: str
) -> None:
    """The Makefile's own command on a copy of the docs and the source with one fault
    fails, naming that fault (the unbroken build is make docs itself)."""
    for part in ("docs", "src", "examples"):
        shutil.copytree(ROOT / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path)
    broken = tmp_path / path
    text = broken.read_text(encoding="utf-8")
    assert old in text
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    failed = subprocess.run(["sh", "-c", _make_docs_command()], cwd=tmp_path,
                            capture_output=True, text=True, timeout=240, check=False)
    assert failed.returncode != 0
    assert complaint in failed.stderr
