"""A throwaway PostgreSQL server in a temporary folder, run as the `postgres` user when we are root."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from gateway.embedded_redis import free_port


def available() -> bool:
    return shutil.which("initdb") is not None and shutil.which("pg_ctl") is not None


class PostgresServer:
    """`folder` is ignored when we are root: the postgres user needs a folder it can reach, so the server
    lives in a fresh one under the system temporary directory, removed by stop().

    `keep` (for benchmarks) is a folder the server lives in and that stop() leaves in place: a server
    started again on it finds its data as it was (`reused` says so), and skips initdb."""

    def __init__(self, folder: Path | None = None, keep: Path | None = None) -> None:
        self.as_postgres = hasattr(os, "geteuid") and os.geteuid() == 0
        if keep is not None:
            folder = keep.resolve()
        elif folder is None or self.as_postgres:
            folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.folder = folder
        self.keep = keep is not None
        self.data = folder / "data"
        self.reused = self.keep and (self.data / "PG_VERSION").exists()
        self.port = free_port()

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
            self.folder.chmod(0o700)
        if not self.reused:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -h 127.0.0.1 -F -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.keep:  # a clean shutdown, so the next start finds the data without recovery
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
