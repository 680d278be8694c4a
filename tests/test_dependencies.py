"""The lock files agree with the requirements: every pin in requirements*.txt is in the lock at the same
version (run `make lock` after editing them), every locked package carries hashes, the runtime lock is
the runtime part of the development one, and what the runtime code imports is a runtime requirement."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?==([^\s;\\#]+)")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[normal(match.group(1))] = match.group(2)
        elif line.startswith("-r "):
            found.update(pins(path.parent / line.split()[1]))
    return found


def locked(path: Path) -> dict[str, str]:
    text = path.read_text()
    entries = re.findall(
        r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", text, re.M
    )
    names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==", text, re.M)
    assert len(entries) == len(names), f"{path.name}: a package without hashes"
    return {normal(name): version for name, version, _ in entries}


def test_every_pin_is_locked_at_its_version() -> None:
    for requirements, lock in (
        ("requirements-dev.txt", "requirements-dev.lock"),
        ("requirements.txt", "requirements.lock"),
    ):
        wanted, have = pins(ROOT / requirements), locked(ROOT / lock)
        stale = {name: (version, have.get(name)) for name, version in wanted.items() if have.get(name) != version}
        assert not stale, f"{lock} is out of date with {requirements} (pin, locked): {stale}; run `make lock`"


def test_the_runtime_lock_is_part_of_the_development_lock() -> None:
    runtime, development = locked(ROOT / "requirements.lock"), locked(ROOT / "requirements-dev.lock")
    assert runtime, "empty runtime lock"
    assert {name: development.get(name) for name in runtime} == runtime
    assert "pytest" not in runtime and "selenium" not in runtime


def test_runtime_imports_are_runtime_requirements() -> None:
    runtime = set(pins(ROOT / "requirements.txt"))
    development_only = set(pins(ROOT / "requirements-dev.txt")) - runtime
    sources = [p for folder in ("apps", "escrow_project") for p in (ROOT / folder).rglob("*.py")]
    imported = set()
    for source in sources:
        for match in re.finditer(r"^\s*(?:import|from)\s+([A-Za-z_][A-Za-z0-9_]*)", source.read_text(), re.M):
            imported.add(normal(match.group(1)))
    assert not (imported & development_only), (
        f"imported at run time but only a development pin: {imported & development_only}"
    )
    assert "aiohttp" in imported and "aiohttp" in runtime
