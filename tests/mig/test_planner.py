import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import migpool
from migpool.mig import catalog, planner
from migpool.mig.layout import Layout
from migpool.mig.planner import PlannedInstance, max_addable, plan, plan_transition

SEVEN_ROLES = ["1g", "1g+me", "1g.big", "2g", "3g", "4g", "7g"]  # catalog order of a 7-slice GPU's profiles
FOUR_ROLES = {"A30-24GB": ["1g", "1g+me", "2g", "2g+me", "4g"], "RTX-PRO-6000": ["1g", "1g+me", "2g", "4g"]}
# Layouts NVIDIA's MIG user guide shows as valid combinations (by slice shape).
SEVEN_EXAMPLES = [
    {"1g": 7},
    {"2g": 3, "1g": 1},
    {"3g": 2},
    {"4g": 1, "2g": 1, "1g": 1},
    {"4g": 1, "3g": 1},
    {"1g.big": 4},
    {"7g": 1},
    {"3g": 1, "2g": 2},
    {"3g": 1, "1g": 4},
    {"2g": 2, "1g": 3},
    {"4g": 1, "1g": 3},
    {"1g+me": 1, "1g": 6},
]
FOUR_EXAMPLES = [{"1g": 4}, {"2g": 2}, {"2g": 1, "1g": 2}, {"4g": 1}]


def roles(model):
    names = [p.name for p in model.profiles]
    return dict(zip(FOUR_ROLES.get(model.key, SEVEN_ROLES), names, strict=False))


def examples(model):
    r = roles(model)
    src = FOUR_EXAMPLES if model.compute_slices == 4 else SEVEN_EXAMPLES
    return [{r[k]: n for k, n in ex.items()} for ex in src]


CASES = [(m.key, ex) for m in catalog.models() for ex in examples(m)]


def overlaps(instances):
    return any(a.placement.overlaps(b.placement) for a, b in itertools.combinations(instances, 2))


@pytest.mark.parametrize(
    "key,layout", CASES, ids=[f"{k}-{'+'.join(f'{n}x{p}' for p, n in lay.items())}" for k, lay in CASES]
)
def test_documented_layouts_plan_and_the_simulator_accepts_them(key, layout, sim):
    model = catalog.lookup(key)
    got = plan(model, layout)
    assert sorted(i.profile.name for i in got) == sorted(p for p, n in layout.items() for _ in range(n))
    assert not overlaps(got)
    b = sim(key)
    b.set_mig_mode(0, True)
    for inst in got:
        gi = b.create_gpu_instance(0, inst.profile.id, inst.placement)
        b.create_compute_instance(0, gi.id)
    assert len(b.mig_devices(0)) == len(got)


def test_reference_example_a100_two_3g():
    got = plan(catalog.lookup("A100-80GB"), {"3g.40gb": 2})
    assert [(i.profile.name, i.start, i.size) for i in got] == [("3g.40gb", 0, 4), ("3g.40gb", 4, 4)]


@pytest.mark.parametrize("key", [m.key for m in catalog.models()])
def test_max_addable_on_an_empty_gpu_is_the_catalog_max(key):
    model = catalog.lookup(key)
    for p in model.profiles:
        assert max_addable(model, p) == p.max_instances


def test_infeasible_request_explains():
    model = catalog.lookup("A100-80GB")
    existing = plan(model, {"4g.40gb": 1})
    with pytest.raises(migpool.LayoutError) as e:
        plan(model, {"3g.40gb": 2}, existing=existing)
    msg = str(e.value)
    assert "4g.40gb@0:4" in msg and "[0, 1, 2, 3]" in msg and "at most 1 fit here (2 on an empty GPU)" in msg
    assert "3g.40gb ×1" in msg


def test_need_picks_largest_profile_that_gives_n():
    model = catalog.lookup("A100-80GB")
    assert Layout.of(partitions=2).resolve(model)[0][0].name == "3g.40gb"
    assert Layout.of(partitions=4, min_memory="16GB").resolve(model)[0][0].name == "1g.20gb"
    assert Layout.of(partitions=7).resolve(model)[0][0].name == "1g.10gb"
    with pytest.raises(migpool.LayoutError, match="cannot hold 5 partitions of at least 16GB: at most 4"):
        Layout.of(partitions=5, min_memory="16GB").resolve(model)


def test_transition_keeps_what_it_can():
    model = catalog.lookup("A100-80GB")
    seven = plan(model, {"1g.10gb": 7})
    t = plan_transition(model, {"3g.40gb": 1, "1g.10gb": 4}, seven)
    assert len(t.keep) == 4 and len(t.destroy) == 3 and [str(i) for i in t.create] == ["3g.40gb@4:4"]


def test_transition_prefers_keeping_busy_instances():
    model = catalog.lookup("A100-80GB")
    two = plan(model, {"3g.40gb": 2})
    for busy in two:
        t = plan_transition(model, {"3g.40gb": 1, "1g.10gb": 3}, two, busy=[busy])
        assert t.keep == (busy,)


# ---- properties ----
models = st.sampled_from(catalog.models())


@st.composite
def requests(draw):
    model = draw(models)
    n = draw(st.integers(1, 4))
    profs = draw(st.lists(st.sampled_from(model.profiles), min_size=n, max_size=n))
    layout = {}
    for p in profs:
        layout[p.name] = layout.get(p.name, 0) + 1
    return model, layout


def brute_force_feasible(model, layout):
    todo = [model.profile(n) for n, c in layout.items() for _ in range(c)]
    for choice in itertools.product(*[p.placements for p in todo]):
        inst = [PlannedInstance(p, pl) for p, pl in zip(todo, choice, strict=False)]
        if all(planner._fits(model, inst[:i], inst[i].profile, inst[i].placement) for i in range(len(inst))):
            return True
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_plan_is_sound_and_complete(req):
    model, layout = req
    try:
        got = plan(model, layout)
    except migpool.LayoutError:
        assert not brute_force_feasible(model, layout)
        return
    assert not overlaps(got)
    assert sorted(i.profile.name for i in got) == sorted(n for n, c in layout.items() for _ in range(c))
    assert all(i.placement in i.profile.placements for i in got)
    assert sum(i.profile.slices for i in got) <= model.compute_slices


@settings(max_examples=150, deadline=None)
@given(requests(), st.data())
def test_max_addable_is_exact(req, data):
    model, layout = req
    try:
        existing = plan(model, layout)
    except migpool.LayoutError:
        return
    p = data.draw(st.sampled_from(model.profiles))
    k = max_addable(model, p, existing)
    if k:
        plan(model, {p.name: k}, existing=existing)
    with pytest.raises(migpool.LayoutError):
        plan(model, {p.name: k + 1}, existing=existing)


@settings(max_examples=100, deadline=None)
@given(requests())
def test_planned_layouts_are_accepted_by_the_simulator(req):
    import tempfile

    model, layout = req
    try:
        got = plan(model, layout)
    except migpool.LayoutError:
        return
    with tempfile.TemporaryDirectory() as d:
        b = migpool.SimulatedBackend(model.key, state_path=f"{d}/s.json")
        b.set_mig_mode(0, True)
        for inst in got:
            b.create_gpu_instance(0, inst.profile.id, inst.placement)
        assert len(b.gpu_instances(0)) == len(got)
