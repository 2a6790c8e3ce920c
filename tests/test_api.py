"""The public API of the package: ``__all__`` is sorted, complete and cheap to import; what
start-up imports (the package, the console script, the command line, metrics, the rate limiter,
a command with plain options, a repeatable option) load, checked in one interpreter."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import msgsend


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert msgsend.__all__ == sorted(msgsend.__all__)
    for name in msgsend.__all__:
        assert getattr(msgsend, name) is not None, name


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        msgsend.DoesNotExist  # noqa: B018
    except AttributeError as exc:
        assert "DoesNotExist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


#: The steps run one after another in one fresh interpreter, each with the modules it must
#: not load. A module a step must not load is also checked before the step: loaded by an
#: earlier step, it could not tell (the order is chosen so that it never is).
IMPORT_STEPS = {
    "package": ("import msgsend", ("typing", "requests", "rich", "typer", "prometheus_client",
                                   "pyrate_limiter", "redis")),
    # the console script's module answers `msgsend --version`
    "entry": ("from msgsend import __main__", ("typing", "typer", "click", "msgsend.cli",
                                                "msgsend.errors")),
    # `msgsend --help`, `config show` and `bulk --dry-run` never pay for requests
    "cli": ("from msgsend import cli", ("requests", "rich", "prometheus_client",
                                        "pyrate_limiter", "msgsend.sandbox")),
    "metrics": ("import msgsend.metrics", ("prometheus_client",)),
    "ratelimit": ("import msgsend.ratelimit", ("pyrate_limiter", "redis")),
    # a command with plain options only: msgsend._typerfast keeps typer from loading pydantic
    "plain options": ("exit_code = bulk_dry_run()", ("pydantic",)),
    # a repeatable option (`sandbox --kakaotalk-fail-suffix`) is parsed without pydantic too
    "repeatable option": ("suffixes = sandbox_suffixes()", ("pydantic",)),
}  # fmt: skip

CHILD = """
import contextlib, io, json, os, sys, tempfile

def bulk_dry_run():
    from msgsend.cli import main
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        with open("in.csv", "w", encoding="utf-8") as handle:
            handle.write("phone,message\\n010-1234-5678,hi\\n")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                main(["bulk", "in.csv", "--dry-run", "--concurrency", "4", "--json"])
        except SystemExit as exc:
            return exc.code
        finally:
            os.chdir("/")

def sandbox_suffixes():
    # the sandbox command's options parsed as the command line would, without starting it
    import typer
    from msgsend.cli import app
    group = typer.main.get_command(app)
    args = ["--kakaotalk-fail-suffix", "0000", "--kakaotalk-fail-suffix", "9", "--seed", "7"]
    with group.make_context("msgsend", ["sandbox"]) as parent:
        command = group.get_command(parent, "sandbox")
        with command.make_context("sandbox", args, parent=parent) as context:
            return context.params["kakaotalk_fail_suffix"]

report = {}
exit_code = suffixes = None
for name, (statement, names) in json.loads(sys.argv[1]).items():
    before = [m for m in names if m in sys.modules]
    exec(statement)
    report[name] = {"before": before, "after": [m for m in names if m in sys.modules]}
report["plain options"]["exit_code"] = exit_code
report["repeatable option"]["value"] = suffixes
print(json.dumps(report))
"""


@functools.cache
def modules_loaded_by_imports() -> dict[str, dict[str, Any]]:
    """Run ``IMPORT_STEPS`` in one fresh interpreter: per step, the modules it must not load
    that were loaded before it and after it."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(IMPORT_STEPS)],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return loaded


def loaded_by(step: str) -> list[str]:
    """The modules ``step`` must not load that are loaded after it (none before it)."""
    result = modules_loaded_by_imports()[step]
    assert result["before"] == [], f"loaded before {step!r}: the check cannot tell"
    modules: list[str] = result["after"]
    return modules


@pytest.mark.parametrize("step", list(IMPORT_STEPS))
def test_a_start_up_step_loads_none_of_the_modules_it_must_not(step: str) -> None:
    assert loaded_by(step) == []


def test_the_plain_options_command_ran_to_its_end() -> None:
    assert modules_loaded_by_imports()["plain options"]["exit_code"] == 0


def test_the_repeatable_option_gets_every_value_given() -> None:
    assert modules_loaded_by_imports()["repeatable option"]["value"] == ["0000", "9"]


def test_the_readme_code_map_names_every_module() -> None:
    """README "Code map": one line per module of src/msgsend (a package's line names its files)."""
    root = Path(msgsend.__file__).parent
    readme = (root.parent.parent / "README.md").read_text(encoding="utf-8")
    code_map = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in code_map.splitlines() if line.startswith("| `")]
    missing = []
    for module in sorted(root.rglob("*.py")):
        relative = module.relative_to(root)
        if len(relative.parts) == 1:
            found = any(row.startswith(f"| `{module.name}` |") for row in rows)
        else:
            package = f"| `{relative.parts[0]}/` |"
            found = any(row.startswith(package) and f"`{module.name}`" in row for row in rows)
        if not found:
            missing.append(str(relative))
    assert missing == []
