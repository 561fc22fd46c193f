"""migpool.pool.api.task: operator slips on lazy tasks say the fix; a newcomer's rough edge, fixed."""

import pytest

import migpool as sky


@sky.function
def one(x):
    return x


def plain(x):
    return x


def test_operator_slips_say_the_fix():
    with sky.Compute(provider=sky.Local(), progress=False) as c:
        with pytest.raises(TypeError, match=r"write `\(a & b\) >> pool`"):
            one(1) & one(2) >> c
        with pytest.raises(TypeError, match="@migpool.function"):
            plain(1) >> c
        with pytest.raises(TypeError, match="@migpool.function"):
            plain(1) @ c
        assert (one(1) & one(2)) >> c == [1, 2]  # a list, as in the reference since 0.11 (0.10: a tuple)
