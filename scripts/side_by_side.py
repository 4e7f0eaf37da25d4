#!/usr/bin/env python3
"""side_by_side.py PEERS_CSV MPS_CSV - libmps beside every peer, per workload,
transport and placement, with the ratio to the raw-socket floor measured in the
same run. Both files have the columns of ../shared/bench/peers/results.csv.

Transports are compared by kind: libmps `uds` with the peers' local transports
(raw `uds`, ZeroMQ and NNG `ipc`, MPI `sm`, iceoryx2 `shm`); `tcp` with `tcp`.
For W1 the figure is the median round trip (lower is better) and the ratio is
figure / raw; for W2 and W3 it is throughput (higher is better) and the ratio is
figure / raw as well, so "x raw" reads the same way as the targets in
docs/PERFORMANCE.md."""
import csv, sys, collections

LOCAL = {"uds", "ipc", "sm", "shm"}
MAIN_METRIC = {"W1": "rtt_median_us", "W2": "msgs_per_s", "W3": "GBps"}
UNIT = {"W1": "us", "W2": "msg/s", "W3": "GB/s"}

def load(path):
    rows = collections.OrderedDict()
    with open(path) as f:
        for r in csv.DictReader(f):
            wl = r["workload"]
            if MAIN_METRIC.get(wl) != r["metric"] or r["median_of_runs"] in ("", "FAILED"):
                continue
            kind = "local" if r["transport"] in LOCAL else r["transport"]
            key = (wl, kind, r["size_bytes"], r["pin"])
            rows.setdefault(key, []).append(r)
    return rows

def fmt(x):
    x = float(x)
    if x >= 1e5: return f"{x:,.0f}"
    if x >= 100: return f"{x:.0f}"
    if x >= 10: return f"{x:.1f}"
    return f"{x:.2f}"

def size_h(s):
    s = int(s)
    return f"{s // 1048576}MiB" if s >= 1048576 else (f"{s // 1024}KiB" if s >= 1024 else f"{s}B")

def main():
    peers, mps = load(sys.argv[1]), load(sys.argv[2])
    print("| workload | transport | size | pin | system | variant | window | figure | x raw |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(set(peers) | set(mps), key=lambda k: (k[0], k[1] != "local", int(k[2]), k[3])):
        wl, kind, size, pin = key
        rs = mps.get(key, []) + peers.get(key, [])
        raw = next((float(r["median_of_runs"]) for r in rs if r["peer"] == "raw"), None)
        for r in rs:
            v = float(r["median_of_runs"])
            ratio = f"{v / raw:.2f}" if raw else "-"
            name = r["peer"] if r["peer"] != "mps" else "**libmps**"
            print(f"| {wl} | {r['transport']} | {size_h(size)} | {pin} | {name} | {r['variant']} | {r['window']} | {fmt(v)} {UNIT[wl]} | {ratio} |")

if __name__ == "__main__":
    main()
