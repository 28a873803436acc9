"""``exporter/parsing.py``: any bytes a provider answers are an observation or an outcome."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from viber_exporter.plugins.bsg import BsgProvider
from viber_exporter.plugins.routee import RouteeProvider

from .fuzzing import BSG, FUZZ, ROUTEE, assert_clean


@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_an_observation_or_an_outcome(raw):
    assert_clean(RouteeProvider, ROUTEE, 200, raw, "abc-1")
    assert_clean(BsgProvider, BSG, 200, raw, "217")
