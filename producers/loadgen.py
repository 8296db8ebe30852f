"""The load generator: realistic traces and feedback, with exact counts of what it sent.

Each feedback event answers a trace of its own. A share of the feedback is
sent before its trace (exporters lag), a share has no trace at all (orphans),
and a spike of bad feedback can be injected on chosen dimensions for a known
time window. Runs are reproducible from the seed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from thumbline.producers import comments
from thumbline.producers.kafka import FeedbackProducer
from thumbline.schemas import FeedbackEvent, TraceEvent

TICK = 0.1


@dataclass(frozen=True, slots=True)
class Spike:
    """Raise the share of bad feedback on some dimensions between two offsets of the run."""

    start: float
    end: float
    bad_share: float = 0.6
    project: str | None = None
    model: str | None = None
    capability: str | None = None

    def matches(self, project: str, model: str, capability: str) -> bool:
        return (
            (self.project is None or self.project == project)
            and (self.model is None or self.model == model)
            and (self.capability is None or self.capability == capability)
        )


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send: a rate of feedback events per second for a duration (or a count)."""

    rate: float = 100.0
    duration: float | None = 10.0
    count: int | None = None
    projects: int = 3
    environments: int = 2
    models: int = 4
    capabilities: int = 3
    users: int = 1000
    #: names instead of project-0..n, model-0..n, capability-0..n (then the counts are unused)
    project_names: tuple[str, ...] = ()
    model_names: tuple[str, ...] = ()
    capability_names: tuple[str, ...] = ()
    bad_share: float = 0.1
    comment_share: float = 0.3
    correction_share: float = 0.0  # feedback that corrects the answer (label edit)
    early_share: float = 0.1  # feedback sent before its trace
    orphan_share: float = 0.0  # feedback whose trace is never sent
    #: traces an LLM judge also rates (annotator evaluator, half of them bad whatever the
    #: spike): stored and shown beside the user's feedback, never counted in rates
    evaluator_share: float = 0.0
    trace_delay: float = 1.0  # how much later an early feedback's trace follows, in seconds
    #: traces carry a question and an answer (comments.exchange): what the trace page shows
    content: bool = False
    spike: Spike | None = None
    seed: int = 1
    run_id: str = field(default_factory=lambda: f"{int(time.time())}")


#: The demo's shop assistant: its models, and what users ask it about.
DEMO_MODELS = ("atlas-large", "atlas-small", "nova-1", "comet-mini")
DEMO_CAPABILITIES = ("product-search", "returns", "order-tracking")

#: The demo's spike: one model goes bad a minute and a half in, for two minutes. With the
#: default rules and windows its alert fires within about four minutes of the start and
#: resolves about ten minutes in; the capabilities, which see it diluted by the other models,
#: do not alert (tests/unit/producers/test_demo_story.py).
DEMO_SPIKE = Spike(start=90.0, end=210.0, bad_share=0.7, model="comet-mini")


def demo_spec(*, spike: Spike | None = DEMO_SPIKE, speed: float = 1.0) -> LoadSpec:
    """The story ``thumbline up --demo`` tells: a shop's assistant, 5 feedback events a second.

    Four models answer product searches, returns and order tracking; about 6% of the
    explicit feedback is bad, and the comments complain, praise or correct in the words of
    their label, kind and capability (:mod:`thumbline.producers.comments`); then ``spike``.

    Args:
        spike: when (seconds into the demo) and where the bad share rises; None: never.
        speed: play the story this many times faster, with as many more events a second
            (each window gets the same events): for rules with short windows.

    Raises:
        ValueError: ``speed`` is not above 0.
    """
    if speed <= 0:
        raise ValueError("speed must be above 0")
    if spike is not None:
        spike = replace(spike, start=spike.start / speed, end=spike.end / speed)
    return LoadSpec(
        rate=5.0 * speed, duration=None, project_names=("shop",), environments=1,
        model_names=DEMO_MODELS, capability_names=DEMO_CAPABILITIES, bad_share=0.06,
        comment_share=0.4, correction_share=0.03, early_share=0.1, orphan_share=0.02,
        trace_delay=1.0 / speed, spike=spike, content=True,
    )  # fmt: skip


@dataclass(slots=True)
class LoadReport:
    """Exactly what was sent (and acknowledged by Kafka)."""

    feedback: int = 0
    traces: int = 0
    orphans: int = 0
    early: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    spike_bad: int = 0
    spike_total: int = 0
    evaluations: int = 0  # the judge's verdicts, beside the feedback counted above
    seconds: float = 0.0
    started_at: str = ""
    spike_from: str | None = None
    spike_to: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = dict(self.labels)
        return data


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(max(1, n))]


class LoadGenerator:
    """Builds the events of a run; :func:`run_load` sends them."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)  # noqa: S311 (test data, not security)
        self.projects = list(spec.project_names) or _names("project", spec.projects)
        self.environments = ["production", "staging", "dev"][: max(1, spec.environments)]
        self.models = list(spec.model_names) or _names("model", spec.models)
        self.capabilities = list(spec.capability_names) or _names("capability", spec.capabilities)
        self.n = 0
        # the judge draws from its own generator: the users' feedback is the same with or
        # without it
        self.judge_rng = random.Random(f"{spec.seed}-judge")  # noqa: S311
        # its own: the events of a run are the same with content as without
        self.content_rng = random.Random(f"{spec.seed}-content")  # noqa: S311

    def pair(self, offset: float) -> tuple[TraceEvent, FeedbackEvent, bool]:
        """One trace and its feedback; True when inside the spike."""
        rng, spec = self.rng, self.spec
        self.n += 1
        trace_id = f"lg-{spec.run_id}-{self.n}"
        project, model = rng.choice(self.projects), rng.choice(self.models)
        capability = rng.choice(self.capabilities)
        user = f"user-{rng.randrange(spec.users)}"
        session = f"session-{user}-{rng.randrange(5)}"
        now = datetime.now(UTC)
        trace = TraceEvent.model_validate({
            "trace_id": trace_id, "project": project, "environment": rng.choice(self.environments),
            "model": model, "capability": capability, "user_id": user, "session_id": session,
            "latency_ms": round(rng.lognormvariate(6.5, 0.5), 1),
            "input_tokens": rng.randrange(50, 2000), "output_tokens": rng.randrange(20, 800),
            "cost_usd": round(rng.uniform(0.0001, 0.02), 6), "status": "ok",
            "start_time": now, "received_at": now,
        })  # fmt: skip
        if spec.content:
            question, answer = comments.exchange(self.content_rng, capability)
            trace = trace.model_copy(update={"input": question, "output": answer})
        in_spike = bool(
            spec.spike
            and spec.spike.start <= offset < spec.spike.end
            and spec.spike.matches(project, model, capability)
        )
        bad = rng.random() < (spec.spike.bad_share if in_spike and spec.spike else spec.bad_share)
        roll = rng.random()
        data: dict[str, Any]
        label = "bad" if bad else "good"
        if spec.correction_share and rng.random() < spec.correction_share:
            said, corrected = comments.correction(rng, capability)
            data = {"kind": "correction", "correction": corrected, "comment": said}
            label = "edit"
        elif roll < 0.6:
            data = {"kind": "thumb", "value": "down" if bad else "up", "name": "response-quality"}
        elif roll < 0.8:
            stars = rng.choice([1, 2]) if bad else rng.choice([3, 4, 5])
            data = {"kind": "rating", "value": stars, "name": "star-rating"}
            label = "neutral" if stars == 3 else label
        elif roll < 0.9 and not bad:
            data = {"kind": "signal", "name": rng.choice(["copied", "regenerated"])}
        else:
            data = {"kind": "bool", "value": not bad, "name": "was-helpful"}
        if "comment" not in data and data["kind"] != "signal" and rng.random() < spec.comment_share:
            data["comment"] = comments.comment(rng, label, data["kind"], capability)
        feedback = FeedbackEvent.model_validate({
            "trace_id": trace_id, "event_id": f"{trace_id}-fb", "project": project, "user_id": user,
            "session_id": session, "received_at": now, **data,
        })  # fmt: skip
        return trace, feedback, in_spike

    def verdict(self, trace: TraceEvent) -> FeedbackEvent | None:
        """An LLM judge's verdict on ``trace`` (for ``evaluator_share`` of them), or None."""
        rng, share = self.judge_rng, self.spec.evaluator_share
        if not share or rng.random() >= share:
            return None
        bad = rng.random() < 0.5
        return FeedbackEvent.model_validate({
            "trace_id": trace.trace_id, "event_id": f"{trace.trace_id}-judge",
            "project": trace.project, "kind": "score", "value": 0.1 if bad else 0.9,
            "name": "llm-judge", "annotator": "evaluator", "received_at": trace.received_at,
        })  # fmt: skip


async def run_load(
    producer: FeedbackProducer,
    spec: LoadSpec,
    *,
    on_progress: Callable[[LoadReport], None] | None = None,
    stop: asyncio.Event | None = None,
) -> LoadReport:
    """Send the run, paced in 100 ms ticks; return exactly what Kafka acknowledged.

    Stops after ``spec.count`` feedback events, after ``spec.duration`` seconds,
    or when ``stop`` is set (``duration=None`` and no count: until stopped).
    """
    gen = LoadGenerator(spec)
    report = LoadReport(started_at=datetime.now(UTC).isoformat())
    start = time.monotonic()
    if spec.spike:
        report.spike_from = datetime.fromtimestamp(time.time() + spec.spike.start, UTC).isoformat()
        report.spike_to = datetime.fromtimestamp(time.time() + spec.spike.end, UTC).isoformat()
    delayed: list[tuple[float, TraceEvent]] = []
    sent = 0.0
    while True:
        offset = time.monotonic() - start
        done = (spec.count is not None and report.feedback >= spec.count) or (
            spec.duration is not None and offset >= spec.duration
        )
        if done or (stop is not None and stop.is_set()):
            break
        due = spec.rate * (offset + TICK) - sent
        n = int(due)
        if spec.count is not None:
            n = min(n, spec.count - report.feedback)
        batch: list[FeedbackEvent | TraceEvent] = []
        for _ in range(n):
            trace, feedback, in_spike = gen.pair(offset)
            roll = gen.rng.random()
            if roll < spec.orphan_share:
                report.orphans += 1
            elif roll < spec.orphan_share + spec.early_share:
                report.early += 1
                delayed.append((offset + spec.trace_delay, trace))
            else:
                batch.append(trace)
            batch.append(feedback)
            judged = gen.verdict(trace)
            if judged is not None:
                batch.append(judged)
                report.evaluations += 1
            report.feedback += 1
            report.labels[feedback.label or ""] += 1
            if in_spike:
                report.spike_total += 1
                report.spike_bad += feedback.label == "bad"
        sent += n
        ready = [t for when, t in delayed if when <= offset]
        delayed = [(when, t) for when, t in delayed if when > offset]
        batch.extend(ready)
        report.traces += sum(isinstance(e, TraceEvent) for e in batch)
        if batch:
            await producer.send_many(batch)
        report.seconds = time.monotonic() - start
        if on_progress is not None:
            on_progress(report)
        await asyncio.sleep(max(0.0, start + offset + TICK - time.monotonic()))
    if delayed:  # traces still owed to early feedback
        await producer.send_many([t for _, t in delayed])
        report.traces += len(delayed)
    report.seconds = time.monotonic() - start
    return report
