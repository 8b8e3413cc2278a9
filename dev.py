#!/usr/bin/env python3
"""The two commands of the README.

    python3 dev.py serve    run the gateway on the embedded defaults (SQLite, embedded Redis, web + worker)
    python3 dev.py test     run ruff, mypy --strict, the import contracts and the whole pytest suite on SQLite
                            and PostgreSQL

Each one creates `.venv/` and installs the project into it first (again only when pyproject.toml changes).
Any further arguments go to `gateway serve` or to pytest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def _say(text: str) -> None:
    print(f"[dev] {text}", flush=True)


def ensure_venv(extras: str) -> None:
    """Create the virtual environment and install the project with `extras` if anything changed."""
    if not PYTHON.exists():
        _say(f"creating {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".installed-{extras or 'base'}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    _say(f"installing the project and its dependencies ({extras or 'runtime'}) into .venv")
    target = f".[{extras}]" if extras else "."
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", target],
        cwd=ROOT,
        check=True,
    )
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """The click-to-call page is tested in headless Chromium; install Debian's package when we can."""
    if shutil.which("chromium") or os.environ.get("GATEWAY_SKIP_BROWSER"):
        return
    if os.name != "nt" and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        _say("installing Debian's chromium for the browser tests")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, stdin=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env, stdin=subprocess.DEVNULL
        )
    if not shutil.which("chromium"):
        _say("WARNING: chromium is not installed; the browser tests will be skipped")


def run(argv: list[str]) -> int:
    return subprocess.run(argv, cwd=ROOT, check=False).returncode


def cmd_serve(args: list[str]) -> int:
    ensure_venv("")
    return forward_signals([str(BIN / "gateway"), "serve", *args])


def forward_signals(argv: list[str]) -> int:
    """Run `gateway serve`, passing SIGTERM, SIGINT and SIGHUP on to it, and wait until it has stopped
    everything it started. (subprocess.run would SIGKILL it on Ctrl-C and orphan its children.)"""
    child = subprocess.Popen(argv, cwd=ROOT)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, forward)
    return child.wait()


def cmd_test(args: list[str]) -> int:
    ensure_venv("test")
    if not any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        # Three pytest processes: much of the suite waits on servers, so it beats the two cores' count.
        args = ["-n", "3", *args]
    ensure_chromium()
    _say("ruff")
    if run([str(BIN / "ruff"), "check", "."]) != 0:
        return 1
    _say("mypy --strict")
    if run([str(BIN / "mypy")]) != 0:
        return 1
    _say("import contracts (lint-imports, see pyproject.toml)")
    if run([str(BIN / "lint-imports"), "--no-cache"]) != 0:
        return 1
    _say("pytest on SQLite")
    code = run([str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider", *args])
    if code != 0:
        return code
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        banner = "!" * 78
        print(f"{banner}\n[dev] PostgreSQL run SKIPPED: initdb/pg_ctl are not on the PATH.\n{banner}", flush=True)
        return 1 if os.environ.get("CI") == "true" else 0
    _say("pytest on PostgreSQL")
    os.environ["GATEWAY_TEST_DATABASE"] = "postgresql"
    return run([str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider", *args])


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"serve", "test"}:
        print(__doc__)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    return cmd_serve(rest) if command == "serve" else cmd_test(rest)


if __name__ == "__main__":
    sys.exit(main())
