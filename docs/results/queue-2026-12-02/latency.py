"""Latency of 1-document requests arriving every 100 ms while 100-document requests run back to back
(issue 13's measure of a fair queue), beside their latency on an idle server. Standard library only.

usage: python3 latency.py URL WORKLOAD.jsonl [SECONDS]
  URL: a running server's /rerank; WORKLOAD: {"query", "passage"} lines (shared/bench/workloads/rerank-100.jsonl)
"""
import json
import statistics
import sys
import threading
import time
import urllib.request


def post(url, body):
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
    return time.perf_counter() - start


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    url, workload = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30
    lines = [json.loads(l) for l in open(workload)]
    query = lines[0]["query"]
    large = {"query": query, "texts": [l["passage"] for l in lines[:100]]}
    small = {"query": query, "texts": [lines[1]["passage"]]}
    post(url, small)  # warm-up
    idle = [post(url, small) for _ in range(20)]
    stop = threading.Event()
    large_times = []

    def large_loop():
        while not stop.is_set():
            large_times.append(post(url, large))

    worker = threading.Thread(target=large_loop)
    worker.start()
    time.sleep(0.5)
    loaded = []
    lock = threading.Lock()
    threads = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        def one():
            t = post(url, small)
            with lock:
                loaded.append(t)
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    stop.set()
    worker.join()
    ms = lambda v: round(v * 1000, 1)
    print(json.dumps({
        "idle_small_p50_ms": ms(statistics.median(idle)),
        "loaded_small_p50_ms": ms(percentile(loaded, 50)),
        "loaded_small_p99_ms": ms(percentile(loaded, 99)),
        "loaded_small_requests": len(loaded),
        "large_requests": len(large_times),
        "large_p50_ms": ms(statistics.median(large_times)) if large_times else None,
        "p50_ratio_to_idle": round(percentile(loaded, 50) / statistics.median(idle), 2),
    }))


if __name__ == "__main__":
    main()
