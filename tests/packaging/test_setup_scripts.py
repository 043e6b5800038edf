"""Set-up touches only what it started: no script stops a service or kills a process by name.

A user's machine may run Orthanc (their PACS) and PostgreSQL (their database) as services; `make test`
must leave them running. Tests start their own instances on free ports and stop them by PID.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("scripts", ".ci", "tests", "Makefile")
FORBIDDEN = {
    "pkill": re.compile(r"\bpkill\b"),
    "killall": re.compile(r"\bkillall\b"),
    "service ... stop": re.compile(r"\bservice\s+\S+\s+stop\b"),
    "systemctl stop": re.compile(r"\bsystemctl\s+(?:stop|kill|disable|mask)\b"),
    "pg_ctlcluster stop": re.compile(r"\bpg_ctlcluster\b.*\bstop\b"),
    "invoke-rc.d ... stop": re.compile(r"\binvoke-rc\.d\s+\S+\s+stop\b"),
}
THIS_FILE = Path(__file__).resolve()


def _scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = REPO_ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [f for f in files if f.resolve() != THIS_FILE]


def find_forbidden(text: str) -> list[str]:
    """Names of the forbidden commands that occur in `text`."""
    return [name for name, pattern in FORBIDDEN.items() if pattern.search(text)]


def test_scanner_catches_the_old_commands() -> None:
    old = ("(service orthanc stop || systemctl stop orthanc) >/dev/null 2>&1 || true\n"
           "pkill -x Orthanc >/dev/null 2>&1 || true\nkillall postgres\n")
    assert find_forbidden(old) == ["pkill", "killall", "service ... stop", "systemctl stop"]


def test_no_script_stops_services_or_kills_by_name() -> None:
    files = _scanned_files()
    assert any(f.name == "install-system-deps.sh" for f in files)
    offenders = {}
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found = find_forbidden(text)
        if found:
            offenders[str(path.relative_to(REPO_ROOT))] = found
    assert offenders == {}


@pytest.mark.parametrize("package", ["orthanc", "orthanc-gdcm", "orthanc-dicomweb", "dcmtk", "dicom3tools",
                                     "chromium", "postgresql"])
def test_install_script_knows_every_peer(package: str) -> None:
    script = (REPO_ROOT / "scripts" / "install-system-deps.sh").read_text()
    assert re.search(rf'need\+=" {re.escape(package)}"', script)
    assert len(re.findall(r"^\s*apt-get install", script, flags=re.M)) == 1
