"""schemathesis (its command line, every default check, every phase) against the live app on loopback:
the OpenAPI document and the API agree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from gateway.embedded_redis import free_port
from tests.support.api import make_key

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.skipif(not SCHEMATHESIS.exists() and shutil.which("schemathesis") is None, reason="no schemathesis")
def test_schemathesis_finds_nothing_with_its_default_checks(make_app, db, clock, configured, poster, tmp_path):
    from gateway.simulator import play_call
    from tests.support.config import CUSTOMER, SIMULTANEOUS

    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    app = make_app(api_rate_limit=1_000_000)
    key = make_key(db, clock.now())
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = subprocess.run(
            [str(SCHEMATHESIS), "run", f"http://127.0.0.1:{port}/api/v1/openapi.json",
             "--header", f"Authorization: Bearer {key}",
             "--max-examples", "8", "--seed", "13", "--no-color",
             "--generation-database", "none", "--report-dir", str(tmp_path),
             "--request-timeout", "30", "--workers", "1",
             # A string schema cannot say "a well-formed ADF document"; tests/intake covers that endpoint.
             "--exclude-path", "/intake/adf"],
            capture_output=True, text=True, timeout=1200, check=False, cwd=tmp_path,
        )
    finally:
        server.shutdown()
        thread.join()
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
