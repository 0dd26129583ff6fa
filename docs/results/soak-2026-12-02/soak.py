"""A soak run against a running server: mixed requests from 4 client threads for a while, some of them
malformed and some abandoned by their client (a 50 ms timeout), the server's resident memory sampled
every 10 s. Prints a JSON summary: requests by outcome, RSS over time. Standard library only.

usage: python3 soak.py BASE_URL SERVER_PID WORKLOAD.jsonl [SECONDS]
"""
import collections
import json
import random
import socket
import sys
import threading
import time
import urllib.error
import urllib.request


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def main():
    base, pid, workload = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 600
    lines = [json.loads(l) for l in open(workload)]
    query = lines[0]["query"]
    passages = [l["passage"] for l in lines]
    outcomes = collections.Counter()
    lock = threading.Lock()
    end = time.time() + seconds

    def request(rng):
        kind = rng.random()
        n = rng.choice([1, 1, 5, 20, 100])
        docs = rng.sample(passages, n)
        if kind < 0.4:
            return "/rerank", {"query": query, "texts": docs}, 30
        if kind < 0.6:
            return "/v2/rerank", {"model": "rerank-v3.5", "query": query, "documents": docs, "top_n": 3}, 30
        if kind < 0.75:
            return "/score", {"pairs": [[query, d] for d in docs]}, 30
        if kind < 0.85:
            return "/rerank", {"query": query, "texts": docs}, 0.05  # the client gives up
        return "/rerank", {"query": query, "texts": "not a list"}, 30  # malformed

    def client(seed):
        rng = random.Random(seed)
        while time.time() < end:
            path, body, timeout = request(rng)
            data = json.dumps(body).encode()
            req = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as response:
                    response.read()
                    outcome = str(response.status)
            except urllib.error.HTTPError as e:
                outcome = str(e.code)
            except (socket.timeout, TimeoutError, urllib.error.URLError) as e:
                outcome = "client gave up" if timeout < 1 else f"error: {e}"
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    memory = []
    start = time.time()
    while time.time() < end:
        memory.append((round(time.time() - start), rss_mb(pid)))
        time.sleep(10)
    for t in threads:
        t.join()
    time.sleep(2)
    memory.append((round(time.time() - start), rss_mb(pid)))
    health = urllib.request.urlopen(base + "/health", timeout=10).status
    print(json.dumps({"seconds": seconds, "outcomes": dict(outcomes), "health_after": health,
                      "rss_mb_over_time": memory}))


if __name__ == "__main__":
    main()
