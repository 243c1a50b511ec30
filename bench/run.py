"""`make bench`: run every benchmark beside its baseline, print a table, write results/*.json."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench.common import RESULTS, Result, write_result

BENCHMARKS = (
    "log_ingestion",
    "poll_capacity",
    "poll_workers",
    "task_detail_reads",
    "metrics_cost",
    "log_queries",
    "commands",
    "projection_rebuild",
    "mixed_load",
    "audit_trail",
    "stream_fanout",
    "worker_rss",
)


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(results: list[Result]) -> str:
    lines = [
        "| benchmark | Deduction | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {fmt(r.value)} {r.unit} | {fmt(r.baseline)} {r.unit}"
            f" ({r.baseline_label}) | {r.ratio:.2f} | {r.target} | {'yes' if r.target_met else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: {', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, not minutes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON files go")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results: list[Result] = []
    failed = []
    for name in args.names or BENCHMARKS:
        started = time.perf_counter()
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            result = importlib.import_module(f"bench.{name}").run(smoke=args.smoke)
        except Exception:  # noqa: BLE001 - report and go on with the others
            traceback.print_exc()
            failed.append(name)
            continue
        result.extra["seconds"] = round(time.perf_counter() - started, 1)
        write_result(result, args.out)
        results.append(result)
        print(
            f"   {fmt(result.value)} {result.unit} vs {fmt(result.baseline)}"
            f" -> ratio {result.ratio:.2f}, target {result.target}:"
            f" {'met' if result.target_met else 'NOT met'}",
            file=sys.stderr,
            flush=True,
        )
    if results:
        print(table(results))
        print(f"\nmachine: {results[0].machine}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
