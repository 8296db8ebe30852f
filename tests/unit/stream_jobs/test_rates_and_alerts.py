"""Rates and spike alerts, broker-free: windows, idempotence, lateness, hysteresis."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from thumbline.schemas import Topics, rates_partition
from thumbline.stream_jobs.bad_feedback_rates import ALL, Counts, RateState
from thumbline.stream_jobs.rates_job import RatesJob
from thumbline.stream_jobs.spike_alerts import (
    AlertRule,
    RulesError,
    SpikeDetector,
    _Track,
    judge,
    load_rules,
    wilson_bounds,
)

T0 = 1_795_000_020.0  # a minute boundary (divisible by 60)
_ids = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def row(at: float, label: str = "bad", *, project: str = "shop", model: str = "m1",
        event_id: str | None = None, version: int = 1, **extra) -> dict:  # fmt: skip
    return {
        "event_id": event_id or f"e{next(_ids)}", "trace_id": f"t{next(_ids)}", "version": version,
        "ts": datetime.fromtimestamp(at, UTC).isoformat(), "label": label, "source": "explicit",
        "project": project, "environment": "prod", "model": model, "capability": "support",
        **extra,
    }  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rates(clock) -> RateState:
    return RateState(window=60, sliding=(300,), lateness=30, history=3600, clock=clock)


BY_MODEL = ("shop", "prod", "m1", ALL)


def base_rows(ended):
    return {(r.window_seconds, r.model, r.capability): r for e in ended for r in e.rows}


def written(ended):
    return {(r.window_seconds, r.window_start.timestamp()): r.bad
            for e in ended for r in e.rows if r.capability == ALL}  # fmt: skip


class TestWindows:
    """Windows complete when the watermark (the join's stored progress) passes them."""

    def test_a_window_completes_with_one_row_per_dimension_set_and_window_size(self, rates):
        rates.apply([
            row(T0 + 1, "bad", comment="wrong"), row(T0 + 2, "good", score=1.0),
            row(T0 + 3, "neutral"), row(T0 + 4, "neutral", source="implicit"),
        ])  # fmt: skip
        assert rates.advance(T0 + 80, {}) == []  # ended, but within the lateness (30 s)
        [ended] = rates.advance(T0 + 90, {})
        got = base_rows([ended])
        m = got[(60, "m1", ALL)]
        got_counts = (m.good, m.bad, m.neutral, m.total, m.implicit, m.with_comment)
        assert got_counts == (1, 1, 1, 3, 1, 1)
        assert m.bad_rate == pytest.approx(1 / 3) and m.mean_score == 1.0
        assert got[(60, ALL, "support")].total == 3
        assert got[(300, "m1", ALL)].window_start == datetime.fromtimestamp(T0 - 240, UTC)

    def test_the_clock_does_not_complete_a_window_however_late_it_is(self, rates, clock):
        rates.apply([row(T0 + 1)])
        clock.now = T0 + 86400  # a stalled stream: the watermark stays where it was
        assert rates.advance(T0 + 30, {}) == []
        rates.apply([row(T0 + 2)])  # what the stall held back still counts
        assert written(rates.advance(T0 + 90, {}))[(60, T0)] == 2 and rates.late == 0

    def test_a_window_waits_until_its_rows_are_stored(self, rates):
        rates.apply([row(T0 + 1)], partition=3, offset=41)
        assert rates.advance(T0 + 95, {3: 40}) == []  # the join has not flushed offset 41
        assert written(rates.advance(T0 + 95, {3: 41}))[(60, T0)] == 1

    def test_windows_complete_in_order(self, rates):
        rates.apply([row(T0 + 1)], partition=0, offset=9)
        rates.apply([row(T0 + 61)], partition=1, offset=2)
        assert rates.advance(T0 + 200, {1: 2}) == []  # the first waits: so does the second
        assert [e.start for e in rates.advance(T0 + 200, {0: 9, 1: 2})] == [T0, T0 + 60]

    def test_the_same_row_twice_counts_once_and_a_newer_version_replaces_it(self, rates):
        rates.apply([row(T0 + 1, "bad", event_id="a"), row(T0 + 1, "bad", event_id="a")])
        rates.apply([row(T0 + 1, "good", event_id="a", version=2)])  # the user changed their mind
        rates.apply([row(T0 + 1, "bad", event_id="a", version=1)])  # a stale replay
        m = base_rows(rates.advance(T0 + 90, {}))[(60, "m1", ALL)]
        assert (m.good, m.bad, m.total) == (1, 0, 1)

    def test_a_retraction_removes_the_event(self, rates):
        rates.apply(
            [row(T0 + 1, event_id="a"), row(T0 + 1, event_id="a", version=2, retracted=True)]
        )
        assert base_rows(rates.advance(T0 + 90, {}))[(60, "m1", ALL)].total == 0

    def test_only_end_user_feedback_counts_and_a_judges_bad_verdict_is_no_sample(self, rates):
        rates.apply([
            row(T0 + 1, "good", score=1.0),
            *[row(T0 + 2, "bad", score=0.0, comment="unsupported", annotator=who)
              for who in ("evaluator", "reviewer", "code")],
            row(T0 + 3, "neutral", source="implicit", annotator="code"),
        ])  # fmt: skip
        assert rates.samples(BY_MODEL, T0, T0 + 60) == []
        m = base_rows(rates.advance(T0 + 90, {}))[(60, "m1", ALL)]
        assert (m.good, m.bad, m.total, m.implicit, m.with_comment, m.score_count) == (
            1, 0, 1, 0, 0, 1,
        )  # fmt: skip

    def test_the_annotators_counted_are_configurable(self, clock):
        rates = RateState(window=60, sliding=(), lateness=30, annotators=("end_user", "reviewer"),
                          clock=clock)  # fmt: skip
        rates.apply([row(T0 + 1, "good"), row(T0 + 2, "bad", comment="wrong", annotator="reviewer"),
                     row(T0 + 3, "bad", annotator="evaluator")])  # fmt: skip
        assert [s[1] for s in rates.samples(BY_MODEL, T0, T0 + 60)] == ["wrong"]
        m = base_rows(rates.advance(T0 + 90, {}))[(60, "m1", ALL)]
        assert (m.good, m.bad, m.total) == (1, 1, 2)

    def test_a_row_without_an_annotator_is_an_end_users(self, rates):
        rates.apply([row(T0 + 1, "bad"), row(T0 + 2, "bad", annotator="end_user")])
        assert base_rows(rates.advance(T0 + 90, {}))[(60, "m1", ALL)].bad == 2

    def test_a_corrected_orphan_moves_to_its_trace_dimensions(self, rates):
        rates.apply([row(T0 + 1, event_id="a", model="")])
        rates.apply([row(T0 + 1, event_id="a", version=2)])
        got = {(r.project, r.model, r.window_seconds): r.total
               for e in rates.advance(T0 + 90, {}) for r in e.rows}  # fmt: skip
        assert got[("shop", "m1", 60)] == 1 and got[("shop", "", 60)] == 0

    def test_the_same_event_id_in_two_projects_is_two_events(self, rates):
        rates.apply([row(T0 + 1, event_id="same", project="a")])
        rates.apply([row(T0 + 1, event_id="same", project="b", version=2)])
        rates.apply([row(T0 + 1, event_id="same", project="a", version=3, retracted=True)])
        got = {(r.project, r.window_seconds): r.total for e in rates.advance(T0 + 90, {})
               for r in e.rows if r.capability == ALL}  # fmt: skip
        assert got[("a", 60)] == 0 and got[("b", 60)] == 1

    def test_a_row_for_a_complete_window_makes_it_dirty_until_its_row_is_stored(self, rates):
        rates.apply([row(T0 + 1)])
        rates.advance(T0 + 90, {})
        assert rates.apply([row(T0 + 2)], partition=2, offset=7) == {T0}
        assert rates.late == 1 and rates.due({2: 6}) == [] and rates.due({2: 7}) == [T0]

    def test_a_recompute_writes_the_window_and_the_sliding_windows_that_hold_it(self, clock):
        state = RateState(window=60, sliding=(300,), lateness=0, clock=clock)
        state.apply([row(T0 + 60 * m + 1) for m in range(3)])  # one bad a minute
        state.advance(T0 + 180, {})  # windows 0, 1 and 2 written
        state.apply([row(T0 + 2)])  # late, for minute 0
        store = {T0 + 60 * m: {BY_MODEL: Counts(bad=2 if m == 0 else 1)} for m in range(3)}
        recomputed = state.replace(store, state.due({}))
        rows = written([recomputed])
        assert rows[(60, T0)] == 2 and not recomputed.first_time and state.dirty == {}
        # the 5-minute windows ending with minutes 0, 1 and 2 all hold minute 0
        assert [rows[(300, T0 + 60 * m + 60 - 300)] for m in range(3)] == [2, 3, 4]

    def test_a_neighbour_the_store_corrected_is_written_again_too(self, clock):
        state = RateState(window=60, sliding=(), lateness=0, clock=clock)
        orphan = ("shop", "prod", "", ALL)
        state.apply([row(T0 + 1, model=""), row(T0 + 61)])  # an orphan, since corrected
        state.advance(T0 + 120, {})  # both written: the orphan under model ""
        state.apply([row(T0 + 62)])  # late: the second window is due
        store = {T0: {BY_MODEL: Counts(bad=1)}, T0 + 60: {BY_MODEL: Counts(bad=2)}}
        rows = state.replace(store, state.due({})).rows
        got = {(r.window_start.timestamp(), r.model): r.bad for r in rows if r.capability == ALL}
        assert got == {(T0, ""): 0, (T0, "m1"): 1, (T0 + 60, "m1"): 2}
        assert orphan not in state.windows[T0].counts

    def test_a_backfill_of_last_month_is_recomputed_window_by_window(self, rates):
        rates.advance(T0, {})  # live: the watermark is now
        month_ago = T0 - 30 * 86400
        dirty = rates.apply([row(month_ago + 1), row(month_ago + 61)], partition=0, offset=3)
        assert dirty == {month_ago, month_ago + 60} and rates.due({0: 3}) == sorted(dirty)
        found = {month_ago: {BY_MODEL: Counts(bad=1)}, month_ago + 60: {BY_MODEL: Counts(bad=1)}}
        rows = written([rates.replace(found, sorted(dirty))])
        assert rows[(60, month_ago)] == 1 and rows[(300, month_ago + 60 - 240)] == 2
        rates.advance(T0 + 1, {})
        assert month_ago not in rates.windows  # older than the history: written, then forgotten

    def test_a_window_is_reconciled_with_the_store_once(self, clock):
        state = RateState(window=60, sliding=(), lateness=0, reconcile=300, clock=clock)
        state.apply([row(T0 + 1, event_id="a")])
        state.advance(T0 + 60, {})
        assert state.due({}) == []
        state.advance(T0 + 360, {})
        assert state.due({}) == [T0]
        # the store knows better: "a" moved to another window (a changed mind)
        rows = written([state.replace({}, [T0])])
        assert rows[(60, T0)] == 0 and state.due({}) == []

    def test_a_row_moved_from_an_open_window_into_a_complete_one_leaves_the_open_one(self, rates):
        rates.apply([row(T0 + 1)])
        rates.advance(T0 + 90, {})
        rates.apply([row(T0 + 61, event_id="x")])
        rates.apply([row(T0 + 5, event_id="x", version=2)])  # its new ts is in the complete one
        assert rates.dirty.keys() == {T0}
        assert written(rates.advance(T0 + 150, {}))[(60, T0 + 60)] == 0

    def test_a_retracted_or_changed_bad_row_is_no_longer_a_sample(self, rates):
        rates.apply([row(T0 + 1, event_id="a", comment="wrong"), row(T0 + 2, event_id="b")])
        rates.apply([row(T0 + 1, event_id="a", version=2, retracted=True)])
        rates.apply([row(T0 + 2, "good", event_id="b", version=2)])
        rates.apply([row(T0 + 3, event_id="c", comment="still wrong")])
        assert [c for _, c in rates.samples(BY_MODEL, T0, T0 + 60)] == ["still wrong"]

    def test_sliding_windows_sum_the_base_windows(self, rates):
        for minute in range(5):
            rates.apply([row(T0 + minute * 60 + 1) for _ in range(minute + 1)])
        rows = base_rows(rates.advance(T0 + 330, {}))
        assert rows[(300, "m1", ALL)].bad == 1 + 2 + 3 + 4 + 5

    def test_windows_written_before_a_restart_are_reconciled_once_the_watermark_is_known(
        self, rates
    ):
        rates.restore_counts(T0, BY_MODEL, Counts(bad=3), recent=True)
        rates.restore_counts(T0 - 3000, BY_MODEL, Counts(bad=1), recent=False)
        assert rates.due({}) == []  # no watermark yet
        rates.advance(T0 + 90, {})
        assert rates.due({}) == [T0]

    def test_counters_are_capped_and_rows_past_the_cap_are_left_out_and_counted(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, max_cells=3, clock=clock)
        rates.apply([row(T0 + 1, model="m1"), row(T0 + 2, model="m2")])  # 3 cells: 2 models, 1 cap
        rates.apply([row(T0 + 3, model="m3")])  # would make 4 cells: left out
        rates.apply([row(T0 + 4, model="m1")])  # existing cells: counted
        assert (rates.cells, rates.bound_hits) == (3, 1)
        assert {m for (_, m, _) in base_rows(rates.advance(T0 + 60, {}))} == {"m1", "m2", ALL}
        rates.replace({}, rates.due({}))  # nothing to reconcile (reconcile=300 by default)
        rates.advance(T0 + 60 + rates.history + rates.reconcile + 60, {})
        rates.replace({}, rates.due({}))
        rates.advance(T0 + 60 + rates.history + rates.reconcile + 120, {})
        assert rates.cells == 0  # forgotten windows free their cells

    def test_events_in_open_windows_are_capped(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, max_events=2, clock=clock)
        rates.apply([row(T0 + 1, event_id="a"), row(T0 + 2, event_id="b")])
        rates.apply([row(T0 + 3, event_id="c"), row(T0 + 4, event_id="a", version=2)])
        assert rates.bound_hits == 1 and set(rates.seen) == {("shop", "a"), ("shop", "b")}

    def test_a_sliding_window_that_is_not_a_multiple_is_refused(self):
        with pytest.raises(ValueError, match="not a multiple"):
            RateState(window=60, sliding=(90,))


def counts(bad: int, total: int) -> Counts:
    return Counts(bad=bad, good=total - bad)


class TestJudge:
    def test_two_bad_out_of_two_never_fires(self):
        assert not judge(AlertRule(name="r"), counts(2, 2), counts(5, 100)).breach
        # nor with the sample-size floor removed: 2 of 2 is not significant at z=3
        unguarded = AlertRule(name="r", min_total=1, min_bad=1)
        assert not judge(unguarded, counts(2, 2), counts(10, 100)).breach

    def test_a_clear_spike_against_a_low_baseline_fires(self):
        rule = AlertRule(name="r")
        assert judge(rule, counts(30, 60), counts(50, 1000)).breach

    def test_noise_around_the_baseline_does_not_fire(self):
        rule = AlertRule(name="r")
        assert not judge(rule, counts(9, 60), counts(100, 1000)).breach

    def test_an_absolute_threshold_fires_whatever_the_baseline(self):
        rule = AlertRule(name="r", threshold=0.3)
        assert judge(rule, counts(40, 60), counts(400, 1000)).breach

    def test_wilson_bounds_hold_the_observed_rate(self):
        low, high = wilson_bounds(10, 100, 1.96)
        assert low < 0.1 < high and wilson_bounds(0, 0, 3) == (0.0, 1.0)


def minute(rates, clock, start: float, bad: int, total: int, project: str = "shop") -> None:
    rates.apply([row(start + 1 + i * 0.01, "bad" if i < bad else "good", project=project)
                 for i in range(total)])  # fmt: skip
    clock.now = start + 60
    rates.advance(start + 60 + rates.lateness, {})


class TestDetector:
    RULE = AlertRule(name="spike", window=60, baseline=600, min_total=20, min_bad=5,
                     resolve_after=2, cooldown=300)  # fmt: skip

    def run(self, rates, clock, detector, bad_per_minute, project="shop"):
        out = []
        for i, bad in enumerate(bad_per_minute):
            start = T0 + i * 60
            minute(rates, clock, start, bad, 60, project)
            minute(rates, clock, start, 3, 60, "other") if project != "other" else None
            out.extend(detector.evaluate(rates, start + 60, clock.now))
        return out

    def test_a_spike_fires_once_for_its_project_and_resolves_after_it(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        detector = SpikeDetector((self.RULE,))
        alerts = self.run(rates, clock, detector, [3] * 10 + [30] * 4 + [3] * 4)
        assert [(a.state, a.project) for a in alerts] == [("firing", "shop"), ("resolved", "shop")]
        firing, resolved = alerts
        assert firing.window_start == datetime.fromtimestamp(T0 + 600, UTC)  # the onset minute
        assert firing.alert_id == resolved.alert_id and firing.bad == 30 and firing.total == 60
        assert firing.baseline_rate < 0.1 and len(firing.sample_trace_ids) == 5
        assert firing.inbox_command.startswith("thumbline inbox --label bad --project shop")

    def test_a_long_spike_does_not_become_its_own_baseline(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=7200, clock=clock)
        detector = SpikeDetector((self.RULE,))  # a 10-minute baseline, a 20-minute spike
        alerts = self.run(rates, clock, detector, [3] * 10 + [30] * 20 + [3] * 4)
        assert [a.state for a in alerts] == ["firing", "resolved"]
        assert alerts[1].window_start.timestamp() >= T0 + 30 * 60  # after the spike, not in it

    def test_a_judge_that_finds_everything_bad_fires_nothing(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        detector = SpikeDetector((self.RULE,))
        alerts = []
        for i in range(14):
            start = T0 + i * 60
            if i >= 10:  # an LLM judge's verdicts on the same traces: all bad
                rates.apply([row(start + 1 + j * 0.01, "bad", annotator="evaluator")
                             for j in range(60)])  # fmt: skip
            minute(rates, clock, start, 3, 60)  # what the users say stays at 5% bad
            alerts.extend(detector.evaluate(rates, start + 60, clock.now))
        assert alerts == []

    def test_low_volume_noise_never_fires(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        detector = SpikeDetector((self.RULE,))
        rng = random.Random(7)
        alerts = []
        for i in range(240):
            start = T0 + i * 60
            total = rng.randint(0, 12)
            rates.apply([row(start + 1 + j * 0.01, "bad" if rng.random() < 0.4 else "good")
                         for j in range(total)])  # fmt: skip
            clock.now = start + 60
            rates.advance(start + 60, {})
            alerts.extend(detector.evaluate(rates, start + 60, clock.now))
        assert alerts == []

    def test_a_restarted_detector_does_not_fire_an_alert_already_firing(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        first = SpikeDetector((self.RULE,))
        [firing] = self.run(rates, clock, first, [3] * 10 + [30] * 2)
        again = SpikeDetector((self.RULE,))
        again.restore([firing.model_dump()])
        start = T0 + 12 * 60
        minute(rates, clock, start, 30, 60)
        assert again.evaluate(rates, start + 60, clock.now) == []
        assert again.firing() == [("spike", ("shop", "prod", "m1", ALL))]

    def test_a_restarted_detector_keeps_the_cooldown_of_a_resolved_alert(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        first = SpikeDetector((self.RULE,))
        alerts = self.run(rates, clock, first, [3] * 10 + [30] * 2 + [3] * 2)
        assert [a.state for a in alerts] == ["firing", "resolved"]
        again = SpikeDetector((self.RULE,))
        again.restore([alerts[-1].model_dump()])  # restarted right after it resolved
        start = T0 + 14 * 60
        minute(rates, clock, start, 30, 60)  # a new spike within the 5-minute cooldown
        assert again.evaluate(rates, start + 60, clock.now) == []
        assert first.evaluate(rates, start + 60, clock.now) == []  # as without the restart

    def test_after_the_spike_too_little_feedback_resolves_it(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        detector = SpikeDetector((self.RULE,))
        alerts = self.run(rates, clock, detector, [3] * 10 + [30] * 2)
        for m in range(12, 15):  # a trickle: 10 a minute, all bad, under min_total (20)
            minute(rates, clock, T0 + m * 60, 10, 10)
            alerts += detector.evaluate(rates, T0 + m * 60 + 60, clock.now)
        assert [a.state for a in alerts] == ["firing", "resolved"]

    def test_a_rate_that_settles_at_a_new_level_resolves_after_the_maximum_age(self, clock):
        rule = self.RULE.model_copy(update={"max_age": 600})
        rates = RateState(window=60, sliding=(), lateness=0, history=7200, clock=clock)
        detector = SpikeDetector((rule,))
        # 5% bad, a spike at 80%, then 40% for good: four times the old baseline
        alerts = self.run(rates, clock, detector, [3] * 10 + [48] * 3 + [24] * 20)
        states = [(a.state, a.window_start.timestamp()) for a in alerts]
        assert [state for state, _ in states] == ["firing", "resolved"]
        assert states[1][1] - states[0][1] <= 600 + 3 * 60  # within the age and two windows

    def test_a_spike_that_dips_a_little_holds(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        detector = SpikeDetector((self.RULE,))
        alerts = self.run(rates, clock, detector, [3] * 10 + [30, 20, 30, 20, 30] + [3] * 4)
        assert [a.state for a in alerts] == ["firing", "resolved"]  # one episode, not three

    def test_only_tracks_with_state_are_kept(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        detector = SpikeDetector((self.RULE,))
        self.run(rates, clock, detector, [3] * 10)
        assert detector.tracks == {}  # quiet dimensions leave nothing behind
        self.run(rates, clock, detector, [3] * 10 + [30] * 2)
        assert list(detector.tracks) == [("spike", ("shop", "prod", "m1", ALL))]

    def test_past_the_track_bound_a_new_spike_is_not_tracked_and_counted(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        detector = SpikeDetector((self.RULE,), max_tracks=1)
        detector.tracks[("spike", ("x", "x", "x", ALL))] = _Track(cooldown_until=math.inf)
        assert self.run(rates, clock, detector, [3] * 10 + [30] * 2) == []
        assert detector.bound_hits >= 1 and len(detector.tracks) == 1

    def test_a_snoozed_rule_stays_quiet(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, history=3600, clock=clock)
        snoozed = self.RULE.model_copy(update={"snooze_until": datetime(2100, 1, 1, tzinfo=UTC)})
        assert self.run(rates, clock, SpikeDetector((snoozed,)), [3] * 10 + [30] * 4) == []


class RecordingSink:
    """Stands in for ClickHouseSink in these broker-free tests: keeps what it is given."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {}

    def add_json(self, table: str, rows: list[bytes]) -> None:
        self.rows.setdefault(table, []).extend(orjson.loads(r) for r in rows)

    def flush(self) -> None:
        pass


class AckingProducer:
    async def send(self, *args, **kwargs) -> asyncio.Future:
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


class Message:
    """A faust event of ``feedback.enriched``: rows, or the join's watermark marker."""

    def __init__(
        self, value: object, partition: int = 0, offset: int = 0, key: bytes | None = None
    ) -> None:
        self.message = self
        self.value = orjson.dumps(value)
        self.key = key  # the join partition it came from
        self.partition, self.offset = partition, offset
        self.topic = "t.feedback.enriched"
        self.tp = (self.topic, partition)
        self.refs = 1  # faust's own reference, dropped after the batch

    def incref(self) -> None:
        self.refs += 1

    def ack(self) -> None:
        self.refs -= 1

    @property
    def acked(self) -> bool:
        return self.refs <= 1  # the job's reference dropped


def marker(
    watermark: float, durable: int = -1, partition: int = 0, sources: tuple[int, ...] = (0,)
) -> Message:
    """A join worker's marker on enriched ``partition``, for the join partitions ``sources``."""
    marks = {str(source): int(watermark * 1000) for source in sources}
    return Message({"watermarks": marks, "durable": durable}, partition, -1)


class Store:
    """What recompute reads: counts per window as the feedback table would have them."""

    def __init__(self) -> None:
        self.windows: dict[float, dict] = {}
        self.reads = 0

    def query(self, sql: str, parameters: dict) -> object:
        self.reads += 1
        since, until = parameters["since"] / 1000, parameters["until"] / 1000
        rows = [(start, *dims, c.good, c.bad, c.neutral, c.implicit, c.with_comment,
                 c.score_sum, c.score_count)
                for start, by in self.windows.items() if since <= start < until
                for dims, c in by.items()]  # fmt: skip
        return type("Result", (), {"result_rows": rows})()


class TestRatesJob:
    """The job: markers make the watermark, late rows are recomputed, acks wait for them."""

    @pytest.fixture
    def job(self, clock) -> RatesJob:
        rates = RateState(window=60, sliding=(), lateness=30, clock=clock)
        return RatesJob(topics=Topics.build("t.", 1), rates=rates,
                        detector=SpikeDetector((TestDetector.RULE,)), sink=RecordingSink(),
                        producer=AckingProducer(), store=Store())  # fmt: skip

    async def test_nothing_completes_before_every_join_partition_has_a_watermark_on_every_partition(
        self, clock
    ):
        rates = RateState(window=60, sliding=(), lateness=0, clock=clock)
        job = RatesJob(topics=Topics.build("t.", 2), rates=rates, detector=SpikeDetector(()),
                       sink=RecordingSink(), producer=AckingProducer())  # fmt: skip
        await job.handle([Message([row(T0 + 1)], key=b"1"),
                          marker(T0 + 600, durable=0, partition=0, sources=(0, 1))])  # fmt: skip
        await job.tick()
        assert job.sink.rows == {}  # enriched partition 1 has not heard from the join
        await job.handle([marker(T0 + 61, partition=1, sources=(0,))])
        await job.tick()
        assert job.sink.rows == {}  # nor from join partition 1 there
        await job.handle([marker(T0 + 61, partition=1, sources=(1,))])
        await job.tick()
        assert [r["bad"] for r in job.sink.rows["feedback_rates"]] == [1, 1]

    @pytest.mark.parametrize("bad", [
        {"watermarks": {"x": 5}}, {"watermarks": {"0": "soon"}}, {"watermarks": [1]},
        {"watermarks": {"0": 1}, "durable": "far"}, {"watermark": None},
    ])  # fmt: skip
    async def test_a_malformed_marker_is_skipped_and_the_stream_goes_on(self, job, bad):
        await job.handle([Message(bad, 0, -1)])  # another client wrote to the topic
        assert job.marks == {}
        await job.handle([Message([row(T0 + 1)], offset=5), marker(T0 + 95, durable=5)])
        await job.tick()
        assert len(job.sink.rows["feedback_rates"]) == 2

    async def test_a_marker_of_an_earlier_join_covers_its_own_partition(self, job):
        await job.handle(
            [
                Message([row(T0 + 1)], offset=5),
                Message({"watermark": int((T0 + 95) * 1000), "durable": 5}, 0, -1),
            ]
        )
        await job.tick()
        assert len(job.sink.rows["feedback_rates"]) == 2

    async def test_only_the_projects_of_the_partitions_held_are_counted_after_a_rebalance(
        self, clock
    ):
        rates = RateState(window=60, sliding=(), lateness=0, clock=clock)
        job = RatesJob(topics=Topics.build("t.", 4), rates=rates, detector=SpikeDetector(()),
                       sink=RecordingSink(), producer=AckingProducer())  # fmt: skip
        held = rates_partition("p", 4)
        await job.assign({held})
        assert job.holds("p") and not all(job.holds(f"q{n}") for n in range(20))
        await job.handle([marker(T0 + 61, partition=held, sources=(0, 1, 2, 3))])
        await job.tick()
        assert job.watermark == T0 + 61  # the partitions of other workers hold nothing back

    async def test_a_window_completes_once_its_rows_are_stored_and_is_judged_once(self, job):
        await job.handle([Message([row(T0 + 1)], offset=5), marker(T0 + 95, durable=4)])
        await job.tick()
        assert job.sink.rows == {}
        await job.handle([marker(T0 + 95, durable=5)])
        await job.tick()
        assert len(job.sink.rows["feedback_rates"]) == 2

    async def test_a_late_row_is_recomputed_from_the_store_and_only_then_acknowledged(
        self, job, monkeypatch
    ):
        monkeypatch.setattr("thumbline.stream_jobs.rates_job.RECOMPUTE_EVERY", 0.0)
        await job.handle([Message([row(T0 + 1)], offset=1), marker(T0 + 95, durable=1)])
        await job.tick()
        late = Message([row(T0 + 2)], offset=2)
        after = Message([row(T0 + 100)], offset=3)
        await job.handle([late, after])
        assert not late.acked and not after.acked  # in order: the late one holds the rest
        job.store.windows[T0] = {BY_MODEL: Counts(bad=2)}
        await job.tick()  # its row is not stored yet: no recompute
        assert job.store.reads == 0
        await job.handle([marker(T0 + 95, durable=3)])
        await job.tick()
        rewritten = [r for r in job.sink.rows["feedback_rates"] if r["capability"] == ALL]
        assert rewritten[-1]["bad"] == 2 and late.acked and after.acked

    async def test_rows_are_acknowledged_once_the_join_says_they_are_stored(self, job):
        first = Message([row(T0 + 1)], offset=1)
        await job.handle([first])
        assert not first.acked  # a replay after a rebalance must bring it back
        await job.handle([marker(T0 + 2, durable=1)])
        assert first.acked

    async def test_a_spike_fires_and_resolves_in_order_when_windows_complete(self, job, clock):
        job.rates.lateness = 0
        for m, bad in enumerate([3] * 12 + [30, 30] + [3] * 4):
            clock.now = T0 + m * 60 + 61
            await job.handle([Message([row(T0 + m * 60 + 1 + i * 0.1, "bad" if i < bad else "good")
                                       for i in range(60)], offset=m)])  # fmt: skip
        await job.handle([marker(T0 + 18 * 60, durable=17)])  # a stalled stream catches up
        await job.tick()
        rows = job.sink.rows["alerts"]
        changes = [(a["state"], a["at"]) for a in rows if not a["published"]]
        assert [state for state, _ in changes] == ["firing", "resolved"]
        assert changes[0][1] < changes[1][1]  # the store's latest state is the resolved one
        sent = [(a["state"], a["version"]) for a in rows if a["published"]]  # once Kafka had them
        assert sent == [(a["state"], a["version"] + 1) for a in rows if not a["published"]]


class TestRulesFile:
    def test_rules_load_from_toml(self, tmp_path: Path):
        path = tmp_path / "rules.toml"
        path.write_text('[[rule]]\nname = "checkout"\nwindow = 120\nprojects = ["checkout"]\n')
        [rule] = load_rules(path, 60)
        assert (rule.name, rule.window, rule.projects) == ("checkout", 120, ("checkout",))

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[[rule]]\nname = 'x'\nwindow = 90\n", "multiples of the base window"),
            ("[[rule]]\nname = 'x'\nmin_total = 0\n", "rule field min_total"),
            ("[[rule]]\nname = 'x'\ncolour = 'red'\n", "rule field colour"),
            ("rule = [", "is not TOML"),
            ("", "has no [[rule]] table"),
        ],
    )
    def test_a_bad_rules_file_says_what_is_wrong(self, tmp_path: Path, text, message):
        path = tmp_path / "rules.toml"
        path.write_text(text)
        with pytest.raises(RulesError, match=message.replace("[", r"\[")):
            load_rules(path, 60)

    def test_without_a_file_the_defaults_apply(self):
        assert [r.name for r in load_rules(None, 60)] == [
            "bad-rate-spike",
            "bad-rate-spike-capability",
        ]
