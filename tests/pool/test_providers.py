"""migpool.pool.api.providers: sky.Ray() without Ray names the extra; a newcomer's rough edge, fixed."""

import importlib.util

import pytest

import migpool as sky


def test_ray_without_ray_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(sky.PluginError, match=r"pip install 'migpool\[ray\]'"):
        sky.Ray()
