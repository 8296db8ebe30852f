"""The demo's story without a broker: comments that agree with their labels, and a spike that
fires one alert within five minutes and resolves it (the rates and rules run on a simulated
clock, as the rates job drives them)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from thumbline.producers import comments
from thumbline.producers.loadgen import (
    DEMO_CAPABILITIES,
    DEMO_MODELS,
    DEMO_SPIKE,
    LoadGenerator,
    LoadSpec,
    demo_spec,
)
from thumbline.schemas import Alert
from thumbline.stream_jobs.bad_feedback_rates import RateState
from thumbline.stream_jobs.spike_alerts import DEFAULT_RULES, SpikeDetector

LABELS = ("bad", "good", "neutral", "edit")


@pytest.fixture(scope="module")
def events() -> list:
    """20 minutes of the demo (its spike included): (trace, feedback, in spike) each."""
    gen = LoadGenerator(demo_spec())
    return [gen.pair(i / 5) for i in range(6000)]


def test_every_demo_trace_carries_a_question_and_an_answer_about_its_capability(events):
    for trace, _, _ in events:
        assert (trace.input, trace.output) in comments.EXCHANGES[trace.capability]


def test_the_question_and_answer_leave_the_rest_of_a_run_as_it_was():
    spec = demo_spec()
    with_content = [LoadGenerator(spec).pair(i / 5) for i in range(50)]
    without = [LoadGenerator(replace(spec, content=False)).pair(i / 5) for i in range(50)]
    for (t1, f1, s1), (t2, f2, s2) in zip(with_content, without, strict=True):
        assert t2.input is None and t2.output is None
        assert t1.model_copy(update={"input": None, "output": None}) == t2.model_copy(
            update={"start_time": t1.start_time, "received_at": t1.received_at}
        )
        assert (f1.label, f1.comment, s1) == (f2.label, f2.comment, s2)


def test_no_comment_belongs_to_two_labels():
    for a in LABELS:
        for b in LABELS:
            if a < b:
                assert not comments.said(a) & comments.said(b), (a, b)


@pytest.mark.parametrize("label", LABELS)
def test_every_comment_of_the_demo_comes_from_the_set_of_its_label(label, events):
    commented = [fb for _, fb, _ in events if fb.label == label and fb.comment]
    assert len(commented) > 20  # every label is in the demo, with comments
    for fb in commented:
        assert fb.comment in comments.said(label), (fb.kind, fb.comment)
        for other in set(LABELS) - {label}:
            assert fb.comment not in comments.said(other)


def test_complaints_and_praise_about_a_capability_come_only_with_that_capability(events):
    about = 0
    for trace, fb, _ in events:
        for capability in DEMO_CAPABILITIES:
            if fb.comment in comments.about(capability):
                assert trace.capability == capability, (fb.comment, trace.capability)
                about += 1
    assert about > 100


def test_corrections_carry_a_corrected_answer_and_say_what_they_fixed(events):
    corrected = [fb for _, fb, _ in events if fb.kind == "correction"]
    assert len(corrected) > 20
    for fb in corrected:
        assert fb.label == "edit" and fb.correction and fb.comment in comments.said("edit")


def test_signals_carry_no_comment_and_each_kind_has_the_comments_of_its_own(events):
    by_kind: dict[str, set[str]] = {}
    for _, fb, _ in events:
        if fb.comment:
            by_kind.setdefault(f"{fb.kind}/{fb.label}", set()).add(fb.comment)
    assert not any(key.startswith("signal/") for key in by_kind)
    # a "was it helpful? no" is not worded like a one-star rating
    assert by_kind["bool/bad"] - by_kind["rating/bad"]
    assert by_kind["rating/bad"] - by_kind["bool/bad"]


def test_a_loadgen_run_without_names_or_corrections_is_unchanged_by_the_demo():
    """Other users of the load generator keep their names, and get no corrections."""
    gen = LoadGenerator(LoadSpec(seed=5, run_id="r"))
    events = [gen.pair(0) for _ in range(2000)]
    assert {t.model for t, _, _ in events} == {f"model-{i}" for i in range(4)}
    assert not any(fb.kind == "correction" for _, fb, _ in events)
    assert all(fb.comment in comments.said(fb.label) for _, fb, _ in events if fb.comment)


# The spike and its alert -------------------------------------------------------------


def run_demo(spec: LoadSpec, *, seconds: float, phase: float) -> list[tuple[float, Alert]]:
    """The demo's events on a simulated clock through the rates and the default rules, as
    ``thumbline up`` runs them (60 s windows, 30 s lateness, the watermark at the clock).

    ``phase``: where in a minute the demo starts (windows are aligned to the minute).
    Returns each alert with the demo's offset when it was emitted.
    """
    t0 = 1_800_000_000.0 + phase
    rates = RateState(window=60, sliding=(300, 3600), lateness=30, history=4 * 3600,
                      clock=lambda: now)  # fmt: skip
    detector = SpikeDetector(DEFAULT_RULES)
    gen, out = LoadGenerator(spec), []
    now, offset, step = t0, 0.0, 1 / spec.rate
    while offset < seconds:
        trace, fb, _ = gen.pair(offset)
        rates.apply([{
            "ts": datetime.fromtimestamp(t0 + offset, UTC), "project": trace.project,
            "environment": trace.environment, "model": trace.model,
            "capability": trace.capability, "label": fb.label, "source": fb.source,
            "comment": fb.comment, "event_id": fb.event_id, "trace_id": fb.trace_id,
            "version": 1, "score": fb.score,
        }])  # fmt: skip
        offset += step
        if int(offset) != int(offset - step):  # a tick each second
            now = t0 + offset
            for ended in rates.advance(now, {}):
                at = ended.start + rates.window
                out += [(offset, a) for a in detector.evaluate(rates, at, now)]
    return out


@pytest.mark.parametrize(
    ("model", "phase"), [(m, p) for i, m in enumerate(DEMO_MODELS) for p in (i * 15.0, 59.0 - i)]
)
def test_the_demo_fires_one_alert_on_its_spike_model_within_five_minutes_and_resolves_it(
    model, phase
):
    """Whichever model the spike is on (``thumbline up`` takes the next one each run), and
    wherever in a minute the demo starts."""
    spec = demo_spec(spike=replace(DEMO_SPIKE, model=model))
    alerts = run_demo(spec, seconds=13 * 60, phase=phase)
    assert [(a.state, a.model, a.rule) for _, a in alerts] == [
        ("firing", model, "bad-rate-spike"),
        ("resolved", model, "bad-rate-spike"),
    ]
    (fired, firing), (resolved, _) = alerts
    assert fired <= 5 * 60 and resolved <= 12 * 60
    assert all(c in comments.said("bad") for c in firing.sample_comments)


@pytest.mark.parametrize("seed", [2, 3])
def test_the_demo_without_its_spike_never_alerts(seed):
    spec = replace(demo_spec(spike=None), seed=seed)
    assert run_demo(spec, seconds=13 * 60, phase=0.0) == []


def test_the_demo_speed_plays_the_same_story_faster():
    fast = demo_spec(speed=30)
    assert fast.rate == demo_spec().rate * 30 and fast.spike is not None
    assert (fast.spike.start, fast.spike.end) == (DEMO_SPIKE.start / 30, DEMO_SPIKE.end / 30)
    assert replace(fast.spike, start=0, end=0) == replace(DEMO_SPIKE, start=0, end=0)
