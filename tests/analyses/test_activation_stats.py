"""ActivationStats: its constructor settings."""

from __future__ import annotations

import pytest

from neuronmap.analyses import ActivationStats
from neuronmap.errors import InvalidParameterError


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eps": -1e-3}, "ActivationStats: eps must be a float in [0, inf); got -0.001."),
    ({"dead_threshold": "0"}, "ActivationStats: dead_threshold must be a float in (-inf, inf); got '0'."),
])
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        ActivationStats(**kwargs)
    assert str(info.value) == message
