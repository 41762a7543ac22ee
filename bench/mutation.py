"""Summarise a ``mutmut run`` (make mutate) into bench/results/mutation.json.

Reads mutmut's result files under ``mutants/`` (one ``.meta`` per mutated module) and
writes, per module, how many mutants were killed and how many survived, and for each
survivor its place in the source and the change it made, so a survivor can be found
and either killed with a test or listed as accepted in docs/testing.md.

Run from the project root after ``mutmut run``: ``python bench/mutation.py [seconds
[mutants]]`` (``seconds``: how long the run took, ``mutants``: the names it was limited
to, both recorded as given). Modules this run did not check keep their earlier entries.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

# Survivors accepted without a test, each by a rule (docs/testing.md): the changed source
# line matches the pattern. Everything else that survives is a test still to write.
ACCEPTED = [
    (
        r"raise EntryRejected\(",
        "the reason a shared entry is rejected: logged at DEBUG only, and the entry is "
        "rejected whatever it says (the rejection itself is tested)",
    ),
    (r"self\._count_hit\(key\)", "the key names the entry in a DEBUG line only"),
    (r"self\._name = name", "the cache's name appears in log lines only"),
    (r"salt=None", "equivalent: HKDF's salt defaults to None (RFC 5869: a zero salt)"),
    (
        r"data_key_seconds|now - cached\[0\] <",
        "a data key's age is read from time.monotonic, not an injected clock: one second "
        "or the boundary instant cannot be observed without sleeping for an hour",
    ),
    (
        r"if len\(blob\) <",
        "the boundary blob is rejected either way (too short, or truncated, or failing "
        "authentication); a sealed login is never empty",
    ),
    (r"popitem\(last=False\)", "equivalent when the mutant passes None: falsy like False"),
    (
        r"now < entry\.mandatory_at",
        "equivalent at the instant itself: an advisory or a mandatory refresh both fetch",
    ),
]
# The same, for rules that need the function or the mutant's line too: the pattern is
# searched in "function: line before -> line after".
ACCEPTED_CHANGES = [
    (
        r'fields\.get\("[CM]", ""\).* -> .*fields\.get\("[CM]", (None|"XXXX"|)\)',
        "unreachable: a server error always has its C (SQLSTATE) and M (message) fields "
        "(www.postgresql.org/docs/current/protocol-error-fields.html: 'Always present')",
    ),
    (
        r"^refused_error: fields = .* -> .*\(cause is not None\) or True",
        "unreachable: a Refused is always raised from the driver error it came from",
    ),
    (
        r"^refused_error: (detail = .* -> .*else \"XXXX\"|.*'login refused'.* -> )",
        "unreachable: a refusal always carries the server's message (the M field is always "
        "present: www.postgresql.org/docs/current/protocol-error-fields.html)",
    ),
    (
        r"^Refused\.__init__: super\(\)\.__init__\(login\.user\) -> ",
        "internal exception, never shown: refused_error builds the message from its login",
    ),
    (
        r"^_login_of: .* -> .*(password=None|method=None)",
        "only the user of a refused login is read (refused_error's message)",
    ),
    (
        r'^Logins\.__init__: ("credentials",|describe=describe,) -> ',
        "the cache's name and key description appear in DEBUG log lines only",
    ),
    (
        r'^Logins\.login: return PasswordSource\(options\.(user|password) or ""',
        "unreachable: method='password' needs both user= and password= (a ConfigurationError "
        "before any login)",
    ),
    (
        r"^_as_secret: options = replace\(call\.options, method=\"secret\", fallback=False\)",
        "equivalent: the converted call's method is 'secret'; fallback is read for 'iam' only",
    ),
    (
        r"^Logins\.invalidate: if predicate is None: -> if predicate is not None:",
        "equivalent: verdicts are kept per Login object and invalidate() drops every cached "
        "login, so the next login is a new object, checked again either way",
    ),
    (
        r"^_checked: return check\(key, value\) -> return check\(None, value\)",
        "equivalent: the check's own message is replaced by one naming the secret and the key",
    ),
    (
        r'^parse_secret: data = None -> data = ""',
        'equivalent: neither None nor "" is a JSON object; the same error follows',
    ),
    (
        r"^refused_error: detail = .* -> .*\(fields\) or True",
        "unreachable: a refusal always carries the server's fields (is_login_refused reads them)",
    ),
    (
        r"^Connections\._domain_key: ",
        "equivalent: the domain's key has only to be the same in the lookup and the discard "
        "and differ from workgroup keys; None and 'XXXX' (workgroup names are lower case) "
        "do that as '' does",
    ),
    (
        r"^Connections\.workgroup: .*(managed admin secret|pass workgroup= or secret_id=)",
        "unreachable: every caller has a workgroup (method='secret' without secret_id= needs "
        "one, fallback=True uses the secret only with one, namespace_roles() takes one)",
    ),
    (
        r"^Connections\._error: if call\.resolved_aws is not None and \( -> .* or \(",
        "equivalent: resolved_aws is None only for a password login to host=, which has "
        "neither workgroup nor custom_domain (Call's docstring)",
    ),
    (
        r"^Connections\.address: return check_host\(\"the secret's host\", ",
        "unreachable: parse_secret already checked the secret's host with the same rule, so "
        "this check never fails and its label is never shown",
    ),
    (
        r"^Logins\._through_shared: describe=describe\(aws\.key\), -> describe=None,",
        "the shared tier's description of a login appears in its log lines only",
    ),
    (
        r"^NotResumed\.__init__: super\(\)\.__init__\(seconds\) -> ",
        "internal exception, never shown: _error reads its seconds attribute",
    ),
    (
        r"^check_driver_kwargs: close = .*, n=3\) -> close = .*candidates, \)$",
        "equivalent: n=3 is difflib.get_close_matches' default",
    ),
    (
        r'^is_transient: message = .* else "" -> .* else "XXXX"$',
        'equivalent: neither "" nor "XXXX" starts with a closed-socket message',
    ),
    (
        r'^calling_module: return "" -> ',
        "unreachable: every Python stack starts in a module outside rsauth (__main__, "
        "runpy, threading)",
    ),
    (
        r"^calling_module: ",
        "killed outside mutmut: its trampoline is itself a caller outside rsauth, so the "
        "calling_module tests of tests/unit/test_driver.py skip under it; each such mutant "
        "was applied by hand (mutmut apply) and failed them",
    ),
]
ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
OUT = ROOT / "bench" / "results" / "mutation.json"


def _function_of(name: str) -> str:
    """``rsauth._cache.xǁ_Slotǁ__init____mutmut_1`` -> ``_Slot.__init__``."""
    local = name.rpartition("__mutmut_")[0].rpartition(".")[2]
    if local.startswith("xǁ"):
        return ".".join(local[2:].split("ǁ"))
    return local.removeprefix("x_")


def _survivor(name: str, source: Path) -> dict[str, Any]:
    diff = get_diff_for_mutant(name, path=source)
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and line[1:2] != "-"]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and line[1:2] != "+"]
    original = (ROOT / source).read_text().splitlines()
    function = _function_of(name).rpartition(".")[2]
    start = next(
        (i for i, line in enumerate(original) if f"def {function}(" in line),
        0,
    )
    line_number = None
    if removed:
        wanted = removed[0].strip()
        line_number = next(
            (i + 1 for i in range(start, len(original)) if original[i].strip() == wanted),
            None,
        )
    function_name = _function_of(name)
    changes = [
        f"{function_name}: {was.strip()} -> {became.strip()}"
        for was, became in zip(removed, added + [""] * len(removed), strict=False)
    ]
    reason = next(
        (why for pattern, why in ACCEPTED if any(re.search(pattern, line) for line in removed)),
        None,
    ) or next(
        (why for pattern, why in ACCEPTED_CHANGES if any(re.search(pattern, c) for c in changes)),
        None,
    )
    return {
        "accepted": reason,
        "mutant": name,
        "function": _function_of(name),
        "line": line_number,
        "was": [line.strip() for line in removed],
        "became": [line.strip() for line in added],
    }


def summarise(earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """This run's modules, and ``earlier``'s for the modules this run did not check."""
    modules: dict[str, Any] = {}
    for meta in sorted(MUTANTS.glob("src/**/*.py.meta")):
        source = meta.relative_to(MUTANTS).with_suffix("")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = {name: status_by_exit_code[code] for name, code in codes.items()}
        checked = {n: s for n, s in statuses.items() if s != "not checked"}
        if not checked:
            continue
        counts = Counter(checked.values())
        # A mutant that makes its tests hang past mutmut's timeout is detected too.
        decided = counts["killed"] + counts["timeout"] + counts["survived"]
        survivors = [
            _survivor(name, source) for name, s in sorted(checked.items()) if s == "survived"
        ]
        accepted = sum(1 for survivor in survivors if survivor["accepted"])
        modules[str(source)] = {
            "mutants": len(checked),
            "killed": counts["killed"],
            "survived": counts["survived"],
            "no_tests": counts["no tests"],
            "timeout": counts["timeout"],
            "other": {
                s: n
                for s, n in counts.items()
                if s not in {"killed", "survived", "no tests", "timeout"}
            },
            "accepted": accepted,
            "detected_percent": (
                round(100 * (decided - counts["survived"]) / decided, 1) if decided else None
            ),
            # Of the mutants not accepted as equivalent or harmless.
            "detected_percent_of_the_rest": (
                round(100 * (decided - counts["survived"]) / (decided - accepted), 1)
                if decided > accepted
                else None
            ),
            "survivors": survivors,
        }
    checked_now = sorted(modules)
    for source, module in (earlier or {}).get("modules", {}).items():
        modules.setdefault(source, module)
    modules = dict(sorted(modules.items()))
    detected = sum(m["killed"] + m["timeout"] for m in modules.values())
    survived = sum(m["survived"] for m in modules.values())
    accepted = sum(m["accepted"] for m in modules.values())
    return {
        "tool": "mutmut",
        "killed": sum(m["killed"] for m in modules.values()),
        "timeout": sum(m["timeout"] for m in modules.values()),
        "survived": survived,
        "accepted": accepted,
        "detected_percent": (
            round(100 * detected / (detected + survived), 1) if detected else None
        ),
        "detected_percent_of_the_rest": (
            round(100 * detected / (detected + survived - accepted), 1) if detected else None
        ),
        "checked_now": checked_now,
        "modules": modules,
    }


def main() -> None:
    # A run limited to some mutants (make mutate MUTANTS=...) updates their modules only;
    # the others keep the figures of the run that measured them.
    earlier = json.loads(OUT.read_text()) if OUT.exists() else None
    report = summarise(earlier)
    checked_now = report.pop("checked_now")
    runs = list((earlier or {}).get("runs", []))
    if earlier is not None and not runs and "seconds" in earlier:
        runs.append({"mutants": "all (the first run)", "seconds": earlier["seconds"]})
    if len(sys.argv) > 1:
        mutants = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else "all"
        runs.append({"mutants": mutants, "seconds": round(float(sys.argv[1]))})
    report["runs"] = runs
    report["seconds"] = sum(run["seconds"] for run in runs)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for source in checked_now:
        module = report["modules"][source]
        print(
            f"{source}: {module['killed']} killed, {module['timeout']} timed out, "
            f"{module['survived']} survived ({module['accepted']} accepted; "
            f"{module['detected_percent_of_the_rest']} % of the rest detected), "
            f"{module['no_tests']} without tests"
        )
    print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
