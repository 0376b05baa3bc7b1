"""``make bench``: every benchmark in turn, each printing its numbers and ratios.

Each benchmark runs in a fresh interpreter: memory figures (RSS per connection) are only
honest in a process whose heap earlier benchmarks have not already grown. Run one alone with
``python -m bench.<name> --help``; pass ``--only NAME`` here to run a subset
(``python -m bench --only leaks_bench``).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

BENCHMARKS = [
    "leaks_bench",
    "leaks_proof",
    "leaks_endpoint",
    "gateway_broadcast",
    "gateway_saturation",
    "gateway_paths",
    "gateway_latency",
    "gateway_memory",
    "gateway_fairness",
    "cluster_broadcast",
    "cluster_latency",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=BENCHMARKS, default=[])
    args = parser.parse_args()
    chosen = args.only or BENCHMARKS
    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{platform.system()} {platform.release()}",
        flush=True,
    )
    failed = []
    for index, name in enumerate(chosen, 1):
        print(f"\n=== [{index}/{len(chosen)}] bench.{name} ===", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"--- bench.{name}: {time.monotonic() - start:.0f}s, exit {code}", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
