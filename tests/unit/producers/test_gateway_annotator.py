"""Who gave the feedback, as the gateway stamps it: from the key, never from a browser's body."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from thumbline.keys import ApiKey
from thumbline.producers.gateway_core import stamp_annotator
from thumbline.schemas import InvalidEvent

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def key(scope: str = "ingest", annotator: str = "") -> ApiKey:
    return ApiKey("0123456789abcdef", scope, "shop", "", NOW, annotator=annotator)  # type: ignore[arg-type]


def stamped(k: ApiKey | None, **fields: object) -> object:
    out = {"trace_id": "t", **fields}
    stamp_annotator(out, k, "FeedbackEvent")
    return out.get("annotator")


class TestAnEndUsersKey:
    """An ingest key without an annotator: the key a browser bundle holds."""

    def test_writes_end_user_feedback(self):
        assert stamped(key()) == "end_user"
        assert stamped(key(), annotator="end_user") == "end_user"

    @pytest.mark.parametrize("who", ["evaluator", "reviewer", "code"])
    def test_cannot_claim_anyone_elses_feedback_and_is_told_what_key_to_make(self, who):
        with pytest.raises(InvalidEvent) as info:
            stamped(key(), annotator=who)
        assert info.value.problems[0][0] == "annotator"
        assert f"--annotator {who}" in info.value.reason
        assert "thumbline keys create --scope ingest --project shop" in info.value.reason

    def test_an_unknown_annotator_is_refused_too(self):
        with pytest.raises(InvalidEvent, match="--annotator evaluator"):
            stamped(key(), annotator="judge")


class TestAKeyWithAnAnnotator:
    @pytest.mark.parametrize("said", [None, "end_user", "evaluator", "code"])
    def test_writes_its_own_whatever_the_body_says(self, said):
        fields = {} if said is None else {"annotator": said}
        assert stamped(key(annotator="reviewer"), **fields) == "reviewer"


class TestAdminAndTheOpenLoopbackGateway:
    @pytest.mark.parametrize("k", [key("admin"), None], ids=["admin key", "no key yet"])
    def test_may_say_who_gave_it(self, k):
        assert stamped(k, annotator="evaluator") == "evaluator"
        assert stamped(k) == "end_user"
