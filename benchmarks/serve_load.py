"""Load on `ferlab serve`, loopback only: a real server process (`ferlab serve` on a free port) and an
asyncio client (httpx) sending real photos (twperformers portraits, or the astronaut when the set
is absent) as raw JPEG bodies to POST /v1/analyze.

Levels of 1, 4, 16 and 64 concurrent clients, each a fixed number of requests under a time limit:
requests/s, faces/s, p50/p95/p99 latency, errors (anything but 200, or a 503 without Retry-After:
a 503 with it is counted apart, and the client waits as told), and whether the server survived.
Then a soak: `--soak N` requests at 16 clients with the server's RSS sampled every 500 requests.

    .venv/bin/python benchmarks/serve_load.py [--requests 300] [--soak 10000]
        -> benchmarks/results/serve_load.json
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ferlab.engine.profiling import git_commit, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"


def photos(n: int = 64) -> tuple[list[bytes], str]:
    if (TW / "index.csv").is_file():
        rows = list(csv.DictReader(open(TW / "index.csv")))
        pick = np.random.RandomState(0).permutation(len(rows))[:n]
        return [(TW / rows[i]["path"]).read_bytes() for i in pick], f"{len(pick)} twperformers photos (256x256 JPEG)"
    import io

    from PIL import Image
    from skimage import data
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=90)
    return [buf.getvalue()], "the astronaut (512x512 JPEG; twperformers absent)"


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        fields[k] = v
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, extra: list[str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("ferlab")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--log-level", "warning", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("server did not start in 60 s")


async def run_level(url: str, bodies: list[bytes], clients: int, requests: int, time_limit: float) -> dict:
    import httpx
    lat, faces, status = [], 0, {}
    errors, busy, busy_without_retry_after, sent = 0, 0, 0, 0
    deadline = time.monotonic() + time_limit
    lock = asyncio.Lock()

    async def worker(k: int, client: httpx.AsyncClient):
        nonlocal faces, errors, busy, busy_without_retry_after, sent
        while True:
            async with lock:
                if sent >= requests or time.monotonic() > deadline:
                    return
                i = sent
                sent += 1
            body = bodies[(i * 7 + k) % len(bodies)]
            t0 = time.perf_counter()
            try:
                r = await client.post(url + "/v1/analyze", content=body, headers={"Content-Type": "image/jpeg"})
            except httpx.HTTPError as e:
                errors += 1
                status[type(e).__name__] = status.get(type(e).__name__, 0) + 1
                continue
            dt = time.perf_counter() - t0
            status[r.status_code] = status.get(r.status_code, 0) + 1
            if r.status_code == 200:
                lat.append(dt)
                faces += len(r.json()["faces"])
            elif r.status_code == 503:
                busy += 1
                if "retry-after" not in r.headers:
                    busy_without_retry_after += 1
                await asyncio.sleep(float(r.headers.get("retry-after", 1)))
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k, client) for k in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000 if lat else np.zeros(1)
    return {"clients": clients, "requests_sent": sent, "ok": len(lat), "wall_s": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 2), "faces_per_s": round(faces / wall, 2),
            "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
                           "p99": round(float(np.percentile(ms, 99)), 1)},
            "errors": errors + busy_without_retry_after, "busy_503_with_retry_after": busy - busy_without_retry_after,
            "status_counts": {str(k): v for k, v in status.items()}}


async def soak(url: str, bodies: list[bytes], pid: int, total: int, clients: int, every: int = 500,
               log=print) -> dict:
    samples, done = [], 0
    while done < total:
        n = min(every, total - done)
        r = await run_level(url, bodies, clients, n, time_limit=3600)
        done += r["requests_sent"]
        cur, peak = rss_mb(pid)
        samples.append({"requests": done, "rss_mb": round(cur, 1), "peak_rss_mb": round(peak, 1),
                        "errors": r["errors"], "requests_per_s": r["requests_per_s"]})
        log(f"  soak {done}/{total}: RSS {cur:.0f} MB (peak {peak:.0f}), {r['requests_per_s']} req/s, "
            f"{r['errors']} errors")
    at_1000 = next(s for s in samples if s["requests"] >= min(1000, total))
    return {"requests": total, "clients": clients, "samples": samples,
            "rss_growth_after_1000_requests_mb": round(samples[-1]["rss_mb"] - at_1000["rss_mb"], 1),
            "errors": sum(s["errors"] for s in samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per level at most")
    ap.add_argument("--soak", type=int, default=10000, help="requests of the memory soak (0: none)")
    ap.add_argument("--server-args", default="", help="extra `ferlab serve` options")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load.json"))
    a = ap.parse_args()
    bodies, what = photos()
    port = free_port()
    proc = start_server(port, a.server_args.split())
    url = f"http://127.0.0.1:{port}"
    result = {"benchmark": "serve_load", "date": now_utc(), "git_commit": git_commit(), "machine": machine_info(),
              "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]), "photos": what,
              "server": f"ferlab serve {a.server_args}".strip() + " (defaults otherwise: 2 front-end workers, "
                        "1 model thread, batch wait 5 ms, 32 in flight)", "levels": []}
    out = Path(a.out)

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, out)
    try:
        asyncio.run(run_level(url, bodies, 4, 40, 60))  # warm-up (not recorded)
        for c in [int(v) for v in a.levels.split(",")]:
            r = asyncio.run(run_level(url, bodies, c, a.requests, a.time_limit))
            r["server_alive"] = proc.poll() is None
            r["server_rss_mb"] = round(rss_mb(proc.pid)[0], 1)
            result["levels"].append(r)
            print(json.dumps(r), flush=True)
            save()
        lv = {r["clients"]: r for r in result["levels"]}
        if 1 in lv and 16 in lv:
            result["throughput_16_over_1"] = round(lv[16]["requests_per_s"] / lv[1]["requests_per_s"], 2)
        if a.soak:
            result["soak"] = asyncio.run(soak(url, bodies, proc.pid, a.soak, 16))
        result["server_alive_at_end"] = proc.poll() is None
        result["targets"] = {
            "0 errors and 0 crashes at every level": all(r["errors"] == 0 and r["server_alive"]
                                                        for r in result["levels"]) and result["server_alive_at_end"],
            "throughput at 16 clients >= 2x at 1": result.get("throughput_16_over_1", 0) >= 2,
            "memory stable over the soak (< 50 MB growth after 1,000 requests)":
                None if not a.soak else result["soak"]["rss_growth_after_1000_requests_mb"] < 50}
        save()
        print(json.dumps(result["targets"], indent=1))
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
