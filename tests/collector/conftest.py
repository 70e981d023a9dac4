"""Fixtures: the real collector app served over HTTP on 127.0.0.1 (see collector_fixtures)."""

import pytest
from collector_fixtures import Collector

from tagstat.collector.intake import Limits


@pytest.fixture
def collector(tmp_path):
    c = Collector(tmp_path / "collector.db")
    yield c
    c.stop()


@pytest.fixture
def collector_factory(tmp_path):
    made = []

    def make(**limits) -> Collector:
        c = Collector(tmp_path / f"collector{len(made)}.db", Limits(**limits))
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
