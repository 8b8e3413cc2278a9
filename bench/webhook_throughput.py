"""The incoming-call webhook (signed, full path: signature, routing, database write) on gunicorn,
against a bare Flask endpoint returning fixed TwiML under the same gunicorn settings, in one run.

    .venv/bin/python bench/webhook_throughput.py [--seconds 10] [--connections 16] [--hours open|closed]

The calls go to four tracked numbers in turn: two ring every agent at once, one rings them in turn with
the owner of an open lead first, one round-robin. With --hours open (the default) the stores are open
around the clock, so every call gets its ring plan whatever the time of the run; with --hours closed
every call goes to voicemail.

Prints requests/s of both and their ratio (wrk, closed loop), then p50/p99 latency of both at a fixed
200 requests/s offered (open loop, latency measured from each request's scheduled time).
Targets (DESIGN.md): ratio >= 0.5; p99 <= 50 ms at 200 requests/s.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

from harness import ROOT, gateway_stack, percentile

sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import free_port
from gateway.simulator import sign
from tests.support.config import BASIC_CONFIG, store_hours

NUMBERS = ["+12025550123", "+12025550124", "+12025550125", "+12025550126"]
LUA = r"""
local bodies, sigs, n, i = {}, {}, 0, 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args)
  for line in io.lines(args[1]) do
    local sig, body = line:match("([^\t]+)\t(.*)")
    n = n + 1; sigs[n] = sig; bodies[n] = body
  end
  i = tid * math.floor(n / 4)
end
function request()
  i = i + 1
  local k = (i % n) + 1
  return wrk.format("POST", "/webhooks/voice/incoming",
    {["Content-Type"] = "application/x-www-form-urlencoded", ["X-Twilio-Signature"] = sigs[k]}, bodies[k])
end
"""


def signed_bodies(base: str, token: str, count: int, prefix: str) -> list[tuple[str, str]]:
    out = []
    for n in range(count):
        params = {
            "CallSid": f"CA{prefix}{n:030d}",
            "AccountSid": "AC" + "7" * 32,
            "From": f"+1202555{(n % 9000) + 1000:04d}",
            "To": NUMBERS[n % len(NUMBERS)],
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        out.append((sign(token, base + "/webhooks/voice/incoming", params), urllib.parse.urlencode(params)))
    return out


def run_wrk(port: int, bodies_file: str, seconds: int, connections: int) -> float:
    script = bodies_file + ".lua"
    with open(script, "w") as handle:
        handle.write(LUA)
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script,
         f"http://127.0.0.1:{port}/webhooks/voice/incoming", "--", bodies_file],
        capture_output=True, text=True, check=True,
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if non2xx:
        print(f"  warning: {non2xx.group(1)} non-2xx responses", flush=True)
    return float(match.group(1)) if match else 0.0


def open_loop(port: int, bodies: list[tuple[str, str]], rate: int, seconds: int) -> list[float]:
    """Send `rate` requests/s on a fixed schedule from a few threads; latency from the scheduled time."""
    latencies: list[float] = []
    lock = threading.Lock()
    total = rate * seconds
    start = time.perf_counter() + 0.2
    workers = 8

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for n in range(index, total, workers):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            signature, body = bodies[n % len(bodies)]
            try:
                connection.request("POST", "/webhooks/voice/incoming", body, {
                    "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                ok = False
            elapsed = (time.perf_counter() - scheduled) * 1000
            with lock:
                latencies.append(elapsed if ok else float("inf"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--postgres", action="store_true", help="run the gateway on a throwaway PostgreSQL")
    parser.add_argument("--hours", choices=("open", "closed"), default="open",
                        help="stores open around the clock (ring plans) or closed (voicemail)")
    parser.add_argument("--web-workers", type=int, default=None,
                        help="gunicorn processes for both apps (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="gunicorn threads per process for both apps (default: gunicorn.conf.py's)")
    parser.add_argument("--rounds", type=int, default=3, help="closed-loop rounds of both apps, alternating")
    args = parser.parse_args()
    if not args.postgres:
        measure(args, None)
        return
    from tests.support import postgres

    server = postgres.PostgresServer()
    server.start()
    try:
        server.execute("CREATE DATABASE gateway_bench")
        measure(args, server.url("gateway_bench"))
    finally:
        server.stop()


def measure(args: argparse.Namespace, database_url: str | None) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package 'wrk'): apt-get install -y wrk")
    bare_port, gateway_port = free_port(), free_port()
    base = f"http://127.0.0.1:{gateway_port}"
    with gateway_stack(store_hours(BASIC_CONFIG, args.hours), database_url) as stack:
        stack.env["PUBLIC_BASE_URL"] = base
        stack.gunicorn("bench.bare_app:app", bare_port, args.web_workers, args.threads)
        stack.gunicorn("wsgi:app", gateway_port, args.web_workers, args.threads)
        token = stack.env["TWILIO_AUTH_TOKEN"]
        closed = signed_bodies(base, token, 60_000, "a")
        bodies_file = str(stack.folder / "bodies.tsv")
        with open(bodies_file, "w") as handle:
            handle.writelines(f"{sig}\t{body}\n" for sig, body in closed)
        kind = "PostgreSQL" if database_url else "SQLite"
        shape = f"{args.web_workers}x{args.threads}" if args.web_workers or args.threads else "gunicorn.conf.py"
        print(f"closed loop, wrk -t2 -c{args.connections} -d{args.seconds}s, gunicorn {shape}, {kind}, "
              f"stores {args.hours}, {args.rounds} round(s), a fresh call in every request:")
        ratios = []
        for number in range(1, args.rounds + 1):
            bare = run_wrk(bare_port, bodies_file, args.seconds, args.connections)
            gateway = run_wrk(gateway_port, bodies_file, args.seconds, args.connections)
            ratios.append(gateway / bare)
            print(f"  round {number}: bare Flask fixed TwiML {bare:8.0f} requests/s, signed incoming-call webhook "
                  f"{gateway:8.0f} requests/s, ratio {gateway / bare:.2f}", flush=True)
            bodies_file = str(stack.folder / f"bodies-{number}.tsv")
            with open(bodies_file, "w") as handle:
                fresh_calls = signed_bodies(base, token, 60_000, f"r{number}")
                handle.writelines(f"{sig}\t{body}\n" for sig, body in fresh_calls)
        print(f"  ratio median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}; "
              "target >= 0.5)")
        print(f"open loop at {args.rate} requests/s offered for {args.seconds}s:")
        fresh = signed_bodies(base, token, args.rate * args.seconds, "b")
        for name, port in (("bare Flask", bare_port), ("gateway webhook", gateway_port)):
            latencies = open_loop(port, fresh, args.rate, args.seconds)
            failed = sum(1 for v in latencies if v == float("inf"))
            good = [v for v in latencies if v != float("inf")]
            print(f"  {name:16s} p50 {percentile(good, 50):6.1f} ms  p99 {percentile(good, 99):6.1f} ms  "
                  f"max {max(good):6.1f} ms  failed {failed}", flush=True)
            fresh = signed_bodies(base, token, args.rate * args.seconds, "c")


if __name__ == "__main__":
    main()
