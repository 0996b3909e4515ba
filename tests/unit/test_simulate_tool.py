"""`rapidloop.tools.simulate`: what `rapidloop simulate` asks of the simulator, without Kafka."""

import pytest

from rapidloop.base.config import load_config
from rapidloop.tools.simulate import parse_duration, speedup_for, world_params
from rapidloop.tools.simulator import SimulationError

NOTHING_GIVEN = {"reports": None, "orgs": None, "campaigns": None, "duration_s": None}


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86400.0), ("90m", 5400.0), ("3600s", 3600.0), ("1h30m", 5400.0), ("2d", 172800.0),
    ("500ms", 0.5), ("1.5", 1.5), (" 2H ", 7200.0),
])
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["3q", "", "h", "1h 30m", "1e999", "nan"])
def test_a_duration_that_cannot_be_read_says_so(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        parse_duration(text)


def test_given_values_win_over_the_drawn_world() -> None:
    cfg = load_config(None)
    fixed = world_params(cfg, seed=3, start=None, forever=False,
                         given={**NOTHING_GIVEN, "reports": 120}, vary=False)
    drawn = world_params(cfg, seed=3, start=None, forever=True,
                         given={**NOTHING_GIVEN, "reports": 120}, vary=True)
    assert (fixed.reports, fixed.epochs, fixed.varied) == (120, 1, False)
    assert (drawn.reports, drawn.epochs, drawn.varied) == (120, None, True)


def test_a_setting_of_the_wrong_type_is_one_line() -> None:
    with pytest.raises(SimulationError, match=r"^bad \[simulate\] setting: "):
        world_params(load_config(None), seed=1, start=None, forever=False,
                     given={**NOTHING_GIVEN, "reports": "many"}, vary=False)


def test_pacing_follows_the_rate_unless_a_speedup_is_given() -> None:
    params = world_params(load_config(None), seed=1, start=None, forever=False,
                          given={**NOTHING_GIVEN, "reports": 1000, "duration_s": 3600.0},
                          vary=False)
    assert speedup_for(params, rate=100.0, speedup=None) == pytest.approx(360.0)
    assert speedup_for(params, rate=100.0, speedup=5.0) == 5.0
    assert speedup_for(params, rate=0.0, speedup=None) is None   # unpaced
