"""MkDocs hooks: the checks that make ``make docs`` fail where mkdocstrings would not.

- Every public name has a docstring: each name in the ``__all__`` of every public module
  (a module whose dotted path has no part starting with ``_``), and the public methods and
  properties of the classes among them. Read statically with griffe, as mkdocstrings
  reads them, so a constant's docstring (the string under its assignment) counts.
- Every public module is in the API reference (``docs/api.md``).
- The site's front page (``docs/index.md``) is the README, so the two never differ.
- The CLI reference is the parsers' own ``--help``: ``docs/cli.md`` holds a marker
  ``<!-- help: rsauth COMMAND -->`` per command, replaced at build time by that command's
  help, and a command without a marker fails the build.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import griffe
from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
API_PAGE = ROOT / "docs" / "api.md"
CLI_PAGE = "cli.md"
HELP_MARKER = re.compile(r"^<!-- help: (rsauth(?: [a-z-]+)?) -->$", re.M)
# The width the help is rendered at, whatever the terminal running the build.
HELP_COLUMNS = "88"


def public_modules(package: griffe.Module) -> Iterator[griffe.Module]:
    """The package and every submodule reachable without a ``_`` name on the way."""
    yield package
    for name, member in package.modules.items():
        if not name.startswith("_") and isinstance(member, griffe.Module):
            yield from public_modules(member)


def _target(member: griffe.Object | griffe.Alias) -> griffe.Object:
    return member.final_target if isinstance(member, griffe.Alias) else member


def undocumented(src: Path = SRC) -> list[str]:
    """Public names without a docstring, as dotted paths."""
    package = griffe.load("rsauth", search_paths=[str(src)], resolve_aliases=True,
                          resolve_external=False)
    assert isinstance(package, griffe.Module)
    missing: list[str] = []
    for module in public_modules(package):
        if not module.docstring:
            missing.append(module.path)
        for name in map(str, module.exports or ()):
            obj = _target(module[name])
            if not obj.docstring:
                missing.append(f"{module.path}.{name}")
            if isinstance(obj, griffe.Class):
                for member_name, member in obj.members.items():
                    target = _target(member)
                    shown = isinstance(target, griffe.Function) or "property" in target.labels
                    if shown and not member_name.startswith("_") and not target.docstring:
                        missing.append(f"{module.path}.{name}.{member_name}")
    return missing


def unreferenced_modules(src: Path = SRC, api_page: Path = API_PAGE) -> list[str]:
    """Public modules the API reference has no ``::: module`` block for."""
    package = griffe.load("rsauth", search_paths=[str(src)], resolve_aliases=False)
    assert isinstance(package, griffe.Module)
    listed = set(re.findall(r"^::: ([\w.]+)", api_page.read_text(encoding="utf-8"), re.M))
    return [m.path for m in public_modules(package) if m.path not in listed]


def command_help(command: str) -> str:
    """What ``command --help`` prints (``command`` is ``rsauth`` or ``rsauth NAME``)."""
    from rsauth._cli import main

    argv = [*command.split()[1:], "--help"]
    out = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(argv)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return out.getvalue().rstrip()


def commands() -> list[str]:
    """``rsauth`` and each of its subcommands."""
    from rsauth._cli import build_parser

    _, subcommands = build_parser()
    return ["rsauth", *(f"rsauth {name}" for name in subcommands)]


def render_cli_help(markdown: str) -> str:
    """``markdown`` with each help marker followed by that command's help."""
    marked = set(HELP_MARKER.findall(markdown))
    missing = [command for command in commands() if command not in marked]
    if missing:
        raise PluginError(f"docs/{CLI_PAGE} has no help marker for: {', '.join(missing)}")

    def block(match: re.Match[str]) -> str:
        return f"```text\n$ {match[1]} --help\n{command_help(match[1])}\n```"

    return HELP_MARKER.sub(block, markdown)


def on_config(config: Any) -> Any:
    """Fail the build before any page is rendered when the reference would be incomplete."""
    missing = undocumented()
    if missing:
        raise PluginError("public names without a docstring: " + ", ".join(missing))
    absent = unreferenced_modules()
    if absent:
        raise PluginError("public modules missing from docs/api.md: " + ", ".join(absent))
    return config


def front_page() -> str:
    """The README, its links into docs/ made relative to the site."""
    return (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """The front page is the README; the CLI reference is rendered from the parsers."""
    if page.file.src_uri == "index.md":
        return front_page()
    if page.file.src_uri == CLI_PAGE:
        return render_cli_help(markdown)
    return markdown
