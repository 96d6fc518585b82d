"""`/set KEY VALUE` in the chat: accepted values change the settings, nonsense is a clean error."""
from __future__ import annotations

import pytest

from edgessd.chat import ChatSettings
from edgessd.errors import InvalidArgumentError


@pytest.mark.parametrize("key,value,attr,expected", [
    ("temp", "0.3", "temperature", 0.3), ("top_k", "5", "top_k", 5), ("top-k", "7", "top_k", 7),
    ("top-p", "1", "top_p", 1.0), ("draft-max", "6", "draft_max", 6),
    ("n", "10", "n_predict", 10), ("mode", "lookup", "mode", "lookup"), ("seed", "7", "seed", 7),
    ("seed", "none", "seed", None), ("repeat-penalty", "1.1", "repeat_penalty", 1.1),
    ("repeat-last-n", "-1", "repeat_last_n", -1),
])
def test_valid_settings(key, value, attr, expected):
    s = ChatSettings(seed=1)
    assert s.set(key, value) == f"{key.replace('_', '-')} = {value}"  # echoed as the flag spells it
    assert getattr(s, attr) == expected


@pytest.mark.parametrize("key,value", [("temp", "-1"), ("temp", "nan"), ("top_p", "0"), ("top_p", "2"), ("n", "0"),
                                       ("mode", "fast"), ("top_k", "a"), ("seed", "x"), ("colour", "red"),
                                       ("repeat-penalty", "0"), ("repeat-penalty", "inf"), ("repeat-last-n", "-2")])
def test_invalid_settings_raise_and_change_nothing(key, value):
    s = ChatSettings()
    before = repr(s)
    with pytest.raises(InvalidArgumentError):
        s.set(key, value)
    assert repr(s) == before
