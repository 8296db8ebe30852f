"""`thumbline up --demo`'s spike and `thumbline loadgen`'s report, without a broker."""

from __future__ import annotations

from collections import Counter

import pytest
import typer

from thumbline.cli.pipeline import _counts, _demo_spike, _describe_demo, _remember_demo_spike
from thumbline.producers.loadgen import DEMO_MODELS, DEMO_SPIKE, demo_spec
from thumbline.settings import load_settings


@pytest.fixture
def settings(tmp_path):
    return load_settings(data_dir=tmp_path / "data")


def test_each_demo_spikes_the_next_model_so_a_restart_is_not_judged_against_the_last_spike(
    settings,
):
    settings.data_dir.mkdir()
    models = []
    for _ in range(len(DEMO_MODELS) + 1):
        spike = _demo_spike(settings, None)
        _remember_demo_spike(settings, spike)  # once up has started
        models.append(spike.model)
    assert models[0] == DEMO_SPIKE.model
    assert sorted(models[:-1]) == sorted(DEMO_MODELS) and models[-1] == models[0]


def test_the_demo_spike_option_changes_only_what_it_names(settings):
    spike = _demo_spike(settings, "start=30,model=atlas-small")
    assert (spike.start, spike.end, spike.model) == (30, DEMO_SPIKE.end, "atlas-small")
    assert spike.bad_share == DEMO_SPIKE.bad_share
    assert _demo_spike(settings, "off") is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("model=gpt-9", "take atlas-large or"),
        ("capability=billing", "take product-search or returns or order-tracking"),
        ("start=300", "start must be at least 0 and before end"),
        ("bad=7", "bad is a share, from 0 to 1"),
        ("when=later", "takes start=, end=, bad="),
    ],
)
def test_a_demo_spike_the_demo_cannot_show_is_refused_saying_what_it_takes(
    settings, text, says, capsys
):
    with pytest.raises(typer.Exit) as exited:
        _demo_spike(settings, text)
    assert exited.value.exit_code == 2
    assert says in " ".join(capsys.readouterr().err.split())


def test_the_demo_says_when_and_where_it_spikes():
    said = _describe_demo(demo_spec())
    assert "5 feedback/s" in said and "thumbline inbox" in said
    assert f"spike 1:30-3:30 on model {DEMO_SPIKE.model} (70% bad)" in said
    assert "thumbline alerts" in said
    assert "spike 0:03-0:07 on" in _describe_demo(demo_spec(speed=30))
    assert "spike" not in _describe_demo(demo_spec(spike=None))


def test_the_demo_names_its_web_pages_when_the_gateway_runs():
    said = _describe_demo(demo_spec(), "http://127.0.0.1:8788")
    assert "see them: http://127.0.0.1:8788/ or thumbline inbox" in said
    assert "thumbline alerts or http://127.0.0.1:8788/rates" in said


def test_loadgen_reports_labels_as_words_not_a_python_dict():
    assert _counts(Counter(good=8000, bad=1200, neutral=80)) == "bad 1200, good 8000, neutral 80"
    assert _counts(Counter()) == "none"
