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

from schemas import Topics
from stream_jobs.bad_feedback_rates import ALL, Counts, RateState
from stream_jobs.rates_job import MAX_HOLD, RatesJob
from stream_jobs.spike_alerts import (
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


class TestWindows:
    def test_a_window_ends_with_one_row_per_dimension_set_and_window_size(self, rates, clock):
        rates.apply([
            row(T0 + 1, "bad", comment="wrong"), row(T0 + 2, "good", score=1.0),
            row(T0 + 3, "neutral"), row(T0 + 4, "neutral", source="implicit"),
        ])  # fmt: skip
        assert rates.advance() == []  # not ended yet
        clock.now = T0 + 60
        [ended] = rates.advance()
        got = base_rows([ended])
        m = got[(60, "m1", ALL)]
        got_counts = (m.good, m.bad, m.neutral, m.total, m.implicit, m.with_comment)
        assert got_counts == (1, 1, 1, 3, 1, 1)
        assert m.bad_rate == pytest.approx(1 / 3) and m.mean_score == 1.0
        assert got[(60, ALL, "support")].total == 3
        assert got[(300, "m1", ALL)].window_start == datetime.fromtimestamp(T0 - 240, UTC)

    def test_the_same_row_twice_counts_once_and_a_newer_version_replaces_it(self, rates, clock):
        rates.apply([row(T0 + 1, "bad", event_id="a"), row(T0 + 1, "bad", event_id="a")])
        rates.apply([row(T0 + 1, "good", event_id="a", version=2)])  # the user changed their mind
        rates.apply([row(T0 + 1, "bad", event_id="a", version=1)])  # a stale replay
        clock.now = T0 + 60
        m = base_rows(rates.advance())[(60, "m1", ALL)]
        assert (m.good, m.bad, m.total) == (1, 0, 1)

    def test_a_retraction_removes_the_event(self, rates, clock):
        rates.apply(
            [row(T0 + 1, event_id="a"), row(T0 + 1, event_id="a", version=2, retracted=True)]
        )
        clock.now = T0 + 60
        assert base_rows(rates.advance())[(60, "m1", ALL)].total == 0

    def test_a_corrected_orphan_moves_to_its_trace_dimensions(self, rates, clock):
        rates.apply([row(T0 + 1, event_id="a", model="")])
        rates.apply([row(T0 + 1, event_id="a", version=2)])
        clock.now = T0 + 60
        got = {
            (r.project, r.model, r.window_seconds): r.total for e in rates.advance() for r in e.rows
        }
        assert got[("shop", "m1", 60)] == 1 and got[("shop", "", 60)] == 0

    def test_the_same_event_id_in_two_projects_is_two_events(self, rates, clock):
        rates.apply([row(T0 + 1, event_id="same", project="a")])
        rates.apply([row(T0 + 1, event_id="same", project="b", version=2)])
        rates.apply([row(T0 + 1, event_id="same", project="a", version=3, retracted=True)])
        clock.now = T0 + 60
        got = {(r.project, r.window_seconds): r.total for e in rates.advance() for r in e.rows
               if r.capability == ALL}  # fmt: skip
        assert got[("a", 60)] == 0 and got[("b", 60)] == 1

    def test_late_rows_within_the_lateness_update_the_window_and_beyond_are_counted(
        self, rates, clock
    ):
        rates.apply([row(T0 + 1)])
        clock.now = T0 + 60
        rates.advance()
        clock.now = T0 + 80  # ended, still open for 10 s
        rates.apply([row(T0 + 2)])
        [again] = rates.advance()
        assert not again.first_time and base_rows([again])[(60, "m1", ALL)].bad == 2
        clock.now = T0 + 95  # closed
        rates.apply([row(T0 + 3)])
        assert rates.late == 1 and rates.advance() == []

    def test_sliding_windows_sum_the_base_windows(self, rates, clock):
        for minute in range(5):
            rates.apply([row(T0 + minute * 60 + 1) for _ in range(minute + 1)])
        clock.now = T0 + 300
        rows = base_rows(rates.advance())
        assert rows[(300, "m1", ALL)].bad == 1 + 2 + 3 + 4 + 5

    def test_held_windows_take_a_replay_after_a_restart_then_close(self, clock):
        state = RateState(window=60, sliding=(), lateness=30, clock=clock)
        clock.now = T0 + 200  # the worker was down while the window ended and closed
        state.hold(T0)
        state.apply([row(T0 + 1, event_id="a"), row(T0 + 2, event_id="b")])  # from the store
        state.apply([row(T0 + 1, event_id="a"), row(T0 + 3, event_id="c")])  # the join's replay
        state.resume()
        [ended, *_] = state.advance()
        assert base_rows([ended])[(60, "m1", ALL)].bad == 3 and state.late == 0
        clock.now += 30  # one lateness after the resume: closed again
        state.apply([row(T0 + 4)])
        assert state.late == 1

    def test_a_window_that_ends_while_the_worker_starts_still_takes_the_replay(self, clock):
        state = RateState(window=60, sliding=(), lateness=30, clock=clock)
        state.hold(T0 - 300)  # restored at T0 + 50: the window had no stored row yet
        clock.now = T0 + 200  # group join and recovery took until long after it ended
        state.apply([row(T0 + 5, event_id="a")])  # the join's replay of what it had not written
        state.resume()  # fresh rows from one partition: another's replay is still coming
        state.apply([row(T0 + 65, event_id="b")])
        assert state.late == 0
        assert {e.start for e in state.advance()} == {T0, T0 + 60}
        clock.now += 30  # one lateness after the resume: windows close as usual
        state.apply([row(T0 + 125)])
        assert state.late == 1

    def test_a_rebalance_holds_the_open_windows_for_the_replay_and_keeps_closed_ones_closed(
        self, clock
    ):
        state = RateState(window=60, sliding=(), lateness=30, clock=clock)
        clock.now = T0 - 55
        state.apply([row(T0 - 55, event_id="old")])
        clock.now = T0 + 5
        state.apply([row(T0 + 5, event_id="a")])
        clock.now = T0 + 80  # a helper dies: the window of T0 - 60 closed, T0's closes at T0 + 90
        state.advance()
        state.hold_open()
        clock.now = T0 + 120  # after the window would have closed; other partitions are fresh
        state.resume()
        state.advance()
        state.apply([row(T0 + 5, event_id="a"), row(T0 + 6, event_id="b")])  # the replay
        state.apply([row(T0 - 50, event_id="c")])  # closed before the rebalance: stays closed
        assert state.late == 1
        [ended] = [e for e in state.advance() if e.start == T0]
        assert base_rows([ended])[(60, "m1", ALL)].bad == 2  # "a" once, and "b"
        clock.now += 30  # one lateness after the resume: closed again
        state.apply([row(T0 + 7)])
        assert state.late == 2

    def test_without_a_hold_a_row_for_a_closed_window_is_late(self, clock):
        state = RateState(window=60, sliding=(), lateness=30, clock=clock)
        clock.now = T0 + 200
        state.apply([row(T0 + 5)])
        assert state.late == 1

    def test_a_late_row_rewrites_the_sliding_windows_already_written_that_hold_it(self, clock):
        state = RateState(window=60, sliding=(300,), lateness=150, clock=clock)
        state.apply([row(T0 + 60 * m + 1) for m in range(3)])  # one bad a minute
        clock.now = T0 + 180
        state.advance()  # windows 0, 1 and 2 written
        state.apply([row(T0 + 2)])  # late, for minute 0 (still open)
        rows = {(r.window_seconds, r.window_start.timestamp()): r.bad
                for e in state.advance() for r in e.rows if r.capability == ALL}  # fmt: skip
        assert rows[(60, T0)] == 2
        # the 5-minute windows ending with minutes 0, 1 and 2 all hold minute 0
        assert [rows[(300, T0 + 60 * m + 60 - 300)] for m in range(3)] == [2, 3, 4]

    def test_counters_are_capped_and_rows_past_the_cap_are_left_out_and_counted(self, clock):
        rates = RateState(window=60, sliding=(), lateness=0, max_cells=3, clock=clock)
        rates.apply([row(T0 + 1, model="m1"), row(T0 + 2, model="m2")])  # 3 cells: 2 models, 1 cap
        rates.apply([row(T0 + 3, model="m3")])  # would make 4 cells: left out
        rates.apply([row(T0 + 4, model="m1")])  # existing cells: counted
        assert (rates.cells, rates.bound_hits) == (3, 1)
        clock.now = T0 + 60
        assert {m for (_, m, _) in base_rows(rates.advance())} == {"m1", "m2", ALL}
        clock.now = T0 + 60 + rates.history + 60
        rates.advance()
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
    rates.advance()


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
            rates.advance()
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
    def __init__(self, rows: list[dict]) -> None:
        self.message = self
        self.value = orjson.dumps(rows)


def received(at: float, received_at: float, **kw) -> dict:
    return row(at, received_at=datetime.fromtimestamp(received_at, UTC).isoformat(), **kw)


class TestRestartHold:
    """After a restart no window is written or judged until the join's replay is in."""

    @pytest.fixture
    def job(self, clock) -> RatesJob:
        rates = RateState(window=60, sliding=(), lateness=30, clock=clock)
        return RatesJob(topics=Topics.build("t.", 1), rates=rates,
                        detector=SpikeDetector((TestDetector.RULE,)), sink=RecordingSink(),
                        producer=AckingProducer())  # fmt: skip

    def restart(self, job, clock) -> None:
        clock.now = T0 + 50  # restored: windows from 5 minutes back held
        job.rates.hold(clock.now - 300)
        job.hold()

    async def test_nothing_is_written_while_the_replay_is_still_coming(self, job, clock):
        self.restart(job, clock)
        clock.now = T0 + 200
        await job.handle([Message([received(T0 + 5, T0 + 5)])])  # the replay: received before
        await job.handle([Message([received(T0 + 100, T0 + 100)])])  # after, but 100 s behind
        await job.tick()
        assert job.sink.rows == {}

    async def test_fresh_output_ends_the_hold_and_the_windows_are_whole(self, job, clock):
        self.restart(job, clock)
        clock.now = T0 + 200
        await job.handle([Message([received(T0 + 5, T0 + 5)])])
        await job.handle([Message([received(T0 + 190, T0 + 190)])])  # received after the restart
        await job.handle([Message([received(T0 + 65, T0 + 65)])])  # another partition's replay
        await job.tick()
        written = {(r["window_start"], r["bad"]) for r in job.sink.rows["feedback_rates"]
                   if r["capability"] == ALL}  # fmt: skip
        assert {bad for _, bad in written} == {1} and len(written) == 2  # T0 and T0 + 60
        assert job.rates.late == 0

    async def test_a_spike_inside_the_hold_changes_state_in_order(self, job, clock):
        for m in range(12):  # a quiet baseline
            clock.now = T0 + m * 60 + 1
            await job.handle([Message([received(T0 + m * 60 + 1 + i * 0.1, T0 + m * 60 + 1,
                                                label="bad" if i < 3 else "good")
                                       for i in range(60)])])  # fmt: skip
            clock.now = T0 + (m + 1) * 60 + 0.5
            await job.tick()
        restart = clock.now
        job.rates.hold(restart - 300)
        job.hold()
        clock.now = restart + 400  # the replay: a spike that started and ended while down
        for m, bad in zip(range(12, 18), [30, 30, 3, 3, 3, 3], strict=True):
            await job.handle([Message([received(T0 + m * 60 + 1 + i * 0.1, restart - 1,
                                                label="bad" if i < bad else "good")
                                       for i in range(60)])])  # fmt: skip
        await job.handle([Message([received(clock.now - 1, clock.now - 1, label="good")])])
        await job.tick()
        changes = [(a["state"], a["at"]) for a in job.sink.rows["alerts"]]
        assert [state for state, _ in changes] == ["firing", "resolved"]
        assert changes[0][1] < changes[1][1]  # the store's latest state is the resolved one

    async def test_a_join_that_stays_behind_holds_the_windows_no_longer_than_max_hold(
        self, job, clock
    ):
        self.restart(job, clock)
        for step in range(0, int(MAX_HOLD) + 60, 30):
            clock.now = T0 + 50 + step
            await job.handle([Message([received(clock.now - 100, clock.now - 100)])])
            await job.tick()
        assert job.sink.rows.get("feedback_rates")


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
