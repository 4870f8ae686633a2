#!/usr/bin/env python3
"""Run ``gateway`` with in-process instrumentation, for profiling under load.

    python bench/gw_instrumented.py [--cprofile OUT.prof] [--gc-stats OUT.json] -- run --config F

``--cprofile`` profiles the whole run with cProfile (dumped at exit, SIGTERM included);
``--gc-stats`` records every garbage-collector pass (generation, duration, objects
collected) and writes a summary.  Both slow the gateway down: use them to find hot
spots, not for the figures.  ``bench/sip_cps.py --instrument ...`` starts the gateway
through this wrapper.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any


def main() -> int:
    argv = sys.argv[1:]
    if "--" in argv:
        i = argv.index("--")
        own, rest = argv[:i], argv[i + 1 :]
    else:
        own, rest = [], argv
    p = argparse.ArgumentParser()
    p.add_argument("--cprofile", type=Path)
    p.add_argument("--gc-stats", type=Path)
    args = p.parse_args(own)

    gc_events: list[tuple[int, float, int]] = []
    start: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            start["t"] = time.perf_counter()
        else:
            gc_events.append((info["generation"], time.perf_counter() - start.get("t", 0.0),
                              info["collected"]))

    if args.gc_stats:
        gc.callbacks.append(on_gc)
    prof = cProfile.Profile() if args.cprofile else None

    def dump() -> None:
        if prof is not None and args.cprofile:
            prof.disable()
            prof.dump_stats(str(args.cprofile))
        if args.gc_stats:
            summary: dict[str, Any] = {}
            for gen in (0, 1, 2):
                ev = [e for e in gc_events if e[0] == gen]
                durs = sorted(e[1] for e in ev)
                summary[f"gen{gen}"] = {
                    "count": len(ev),
                    "total_s": round(sum(durs), 3),
                    "max_ms": round(1000 * durs[-1], 2) if durs else 0,
                    "p99_ms": round(1000 * durs[int(0.99 * (len(durs) - 1))], 2) if durs else 0,
                    "collected": sum(e[2] for e in ev),
                }
            summary["objects_tracked_at_exit"] = len(gc.get_objects())
            args.gc_stats.write_text(json.dumps(summary, indent=2) + "\n")

    from gateway.cli import main as gateway_main

    # Twisted stops the reactor on SIGTERM; cli.main then returns and we dump.
    signal.signal(signal.SIGUSR1, lambda *a: dump())
    if prof is not None:
        prof.enable()
    try:
        rc = gateway_main(rest)
    finally:
        dump()
    return rc


if __name__ == "__main__":
    sys.exit(main())
