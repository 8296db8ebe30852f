"""Spike detection: delay after a known onset, and false alarms on steady traffic.

Drives the real window and alert code (``RateState``, ``SpikeDetector`` with the
default rules: a 5-minute window judged every minute against the trailing hour)
on the load generator's events, with a simulated clock, so hours of traffic
take seconds. Each feedback event is joined with its trace by ``JoinState``
and counted at its event time, as the stream does.

- ``steady``: hours of traffic with 10% bad feedback and no spike; every
  firing is a false alarm.
- ``spike``: 90 minutes of steady traffic (10% bad), then the load
  generator's spike (``--share`` bad, on one project) for 20 minutes, then 60
  minutes of traffic at each ``--after`` bad share; the delay is from the
  spike's start to the firing alert's time, and from its end to the resolved
  alert.

    python bench/alert_detection.py --rate 20 --hours 24 --seeds 5 --share 0.8 --after 0.1 0.4
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import git_commit

from thumbline.producers.loadgen import LoadGenerator, LoadSpec, Spike
from thumbline.schemas import Alert
from thumbline.stream_jobs.bad_feedback_rates import RateState
from thumbline.stream_jobs.join_state import JoinState
from thumbline.stream_jobs.spike_alerts import DEFAULT_RULES, SpikeDetector

T0 = 1_795_000_020.0  # a minute boundary
WINDOW = 60.0


def simulate(spec: LoadSpec, seconds: int, after: float | None = None) -> tuple[list[Alert], int]:
    """Run ``seconds`` of traffic at ``spec.rate`` per second; the alerts and the event count.

    ``after``: the bad share once the spike has ended (default: as before it)."""
    clock = [T0]
    rates = RateState(window=WINDOW, sliding=(300,), lateness=30, history=4 * 3600 + 3900,
                      clock=lambda: clock[0])  # fmt: skip
    detector = SpikeDetector(DEFAULT_RULES)
    join = JoinState(clock=lambda: clock[0])
    gen = LoadGenerator(spec)
    alerts: list[Alert] = []
    carry = 0.0
    events = 0
    for second in range(seconds):
        if after is not None and spec.spike and second == int(spec.spike.end):
            gen.spec = dataclasses.replace(gen.spec, bad_share=after)
        carry += spec.rate
        n, carry = int(carry), carry - int(carry)
        rows = []
        for i in range(n):
            trace, feedback, _ = gen.pair(float(second))
            join.add_traces([trace])
            for row in join.add_feedback([feedback]):
                data = dict(row.__dict__)
                data["ts"] = datetime.fromtimestamp(T0 + second + i / max(n, 1), UTC)
                rows.append(data)
        events += n
        clock[0] = T0 + second + 1
        rates.apply(rows)
        for ended in rates.advance(clock[0], {}):  # the join keeps up: the watermark is now
            if ended.first_time:
                alerts.extend(detector.evaluate(rates, ended.start + WINDOW, clock[0]))
        if second % 600 == 0:
            join.traces.clear()  # bounded memory: every feedback here follows its trace at once
    return alerts, events


def steady(rate: float, hours: float, seed: int) -> tuple[int, float]:
    spec = LoadSpec(rate=rate, projects=3, environments=2, models=2, capabilities=2,
                    bad_share=0.1, seed=seed, run_id=f"steady{seed}")  # fmt: skip
    alerts, _ = simulate(spec, int(hours * 3600))
    return sum(1 for a in alerts if a.state == "firing"), hours


def spike(rate: float, seed: int, share: float, after: float) -> dict[str, float | None]:
    start, end = 90 * 60, 110 * 60
    spec = LoadSpec(
        rate=rate, projects=3, environments=2, models=2, capabilities=2, bad_share=0.1,
        seed=seed, run_id=f"spike{seed}",
        spike=Spike(start=start, end=end, bad_share=share, project="project-0"),
    )  # fmt: skip
    alerts, _ = simulate(spec, 170 * 60, after)
    on = [a for a in alerts if a.project == "project-0"]
    others = [a for a in alerts if a.project != "project-0" and a.state == "firing"]
    fired = next((a for a in on if a.state == "firing"), None)
    episodes: dict[tuple[str, ...], int] = {}
    last: dict[str, Alert] = {}  # each episode's latest state
    for a in on:
        last[a.alert_id] = a
        if a.state == "firing":
            key = (a.rule, a.environment, a.model, a.capability)
            episodes[key] = episodes.get(key, 0) + 1
    all_resolved = bool(last) and all(a.state == "resolved" for a in last.values())
    return {
        "detect_s": fired.at.timestamp() - (T0 + start) if fired else None,
        # when the last of the spike's alerts resolved; None if one still fires at the end
        "resolve_s": max(a.at.timestamp() for a in last.values()) - (T0 + end)
        if all_resolved
        else None,
        "alerts": len(episodes),  # one per rule and dimension set that saw the spike
        "refired": sum(1 for n in episodes.values() if n > 1),
        "false_elsewhere": len(others),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, nargs="+", default=[20.0],
                        help="feedback events per second (all dimensions)")  # fmt: skip
    parser.add_argument("--hours", type=float, default=24.0, help="steady traffic per seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--share", type=float, nargs="+", default=[0.3, 0.5],
                        help="bad share inside the spike (steady: 0.1)")  # fmt: skip
    parser.add_argument("--after", type=float, nargs="+", default=[0.1],
                        help="bad share after the spike (60 minutes)")  # fmt: skip
    args = parser.parse_args()
    commit = git_commit()
    began = time.perf_counter()
    print("| rate/s | spike bad share | after | seeds | detected | detection delay s (median, max) "
          "| in windows (median) | resolved | resolved after end s (median, max) "
          "| alerts per spike (median) | re-fired | firings elsewhere |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rate, share, after in itertools.product(args.rate, args.share, args.after):
        runs = [spike(rate, seed, share, after) for seed in range(args.seeds)]
        delays = [r["detect_s"] for r in runs if r["detect_s"] is not None]
        resolves = [r["resolve_s"] for r in runs if r["resolve_s"] is not None]
        repeat = sum(int(r["refired"] or 0) for r in runs)
        per_spike = statistics.median(float(r["alerts"] or 0) for r in runs)
        others = sum(int(r["false_elsewhere"] or 0) for r in runs)
        med = statistics.median(delays) if delays else float("nan")
        print(
            f"| {rate:g} | {share:g} | {after:g} | {args.seeds} | {len(delays)}/{args.seeds} "
            f"| {med:.0f}, {max(delays) if delays else float('nan'):.0f} | "
            f"{med / WINDOW:.1f} | {len(resolves)}/{args.seeds} | "
            f"{statistics.median(resolves) if resolves else float('nan'):.0f}, "
            f"{max(resolves) if resolves else float('nan'):.0f} | "
            f"{per_spike:g} | {repeat} | {others} |",
            flush=True,
        )
    print()
    print("| rate/s | hours of steady traffic | false alarms | per hour |")
    print("|---|---|---|---|")
    for rate in args.rate:
        total, hours = 0, 0.0
        for seed in range(args.seeds):
            fired, h = steady(rate, args.hours / args.seeds, 100 + seed)
            total, hours = total + fired, hours + h
        print(f"| {rate:g} | {hours:g} | {total} | {total / hours:.3f} |", flush=True)
    print(f"\n{platform.machine()}, {datetime.now(UTC):%Y-%m-%d}, commit {commit}, "
          f"{time.perf_counter() - began:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
