"""Every table of every command, rendered as in an 80-column terminal: nothing a person reads is cut."""

import json
import re

import pytest
from migpool_cli import mp

from migpool.mig import catalog
from migpool.mig.catalog import format_placements

WIDTH = 80
SHORT_UUID = re.compile(r"\b(?:MIG|GPU)-[0-9a-f]{8}…")


def readable(text: str) -> str:
    """Checks that hold for any output: no line past 80 columns, no ellipsis but a shortened UUID's."""
    for line in text.splitlines():
        assert len(line) <= WIDTH, line
    assert "…" not in SHORT_UUID.sub("", text), text
    return text


def words(text: str) -> set[str]:
    return set(re.findall(r"[^\s,│]+", text))


def run(*args, **kw):
    r = mp(*args, env={"COLUMNS": str(WIDTH), **kw.pop("env", {})}, **kw)
    readable(r.stdout)
    return r


@pytest.mark.parametrize("model", [m.key for m in catalog.models()])
def test_gpus_profiles_and_catalog_show_at_80_columns(model):
    sim = ["--simulate", f"{model}:2"]
    m = catalog.lookup(model)
    out = run("gpus", *sim, check=0).stdout
    assert {"Disabled", f"{m.memory_mib}"} <= words(out) and set(m.name.split()) <= words(out)
    if len(m.name) <= 30:
        assert m.name in out  # common names stay on one line
    out = run("profiles", *sim, "--gpu", "0", check=0).stdout
    shown = run("catalog", "show", model, check=0).stdout
    for p in m.profiles:
        for text in (out, shown):
            assert {p.name, str(p.id), f"{p.memory_mib}", str(p.max_instances)} <= {w.lstrip("~") for w in words(text)}
            assert format_placements(p.placements) in text
    listed = json.loads(run("catalog", "show", model, "--json", check=0).stdout)["profiles"]
    for p, row in zip(m.profiles, listed, strict=True):
        assert [c["name"] for c in row["compute_profiles"]] == [c.name for c in p.compute_profiles]
        assert {f"{c.slices}c" for c in p.compute_profiles} <= {w.rstrip(",") for w in words(shown)}


def test_plan_apply_status_demo_and_catalog_at_80_columns():
    sim = ["--simulate", "H200:2"]
    out = run("plan", "1g.18gb:7", *sim, check=0).stdout
    assert "1g.18gb" in words(out)
    applied = run("apply", "3g.71gb:1,1g.18gb:3", *sim, "--gpu", "1", check=0).stdout
    uuids = re.findall(r"MIG-[0-9a-f-]{36}", applied)
    assert len(uuids) == 4  # apply prints whole UUIDs, one per line
    out = run("status", *sim, check=0).stdout
    assert "Enabled" in words(out) and "Disabled" in words(out)
    for u in uuids:
        assert u[:12] + "…" in out
    for w in ("3g.71gb", "1g.18gb", "71424", "16384"):
        assert any(w in x for x in words(out)), w
    out = run("catalog", check=0).stdout
    for m in catalog.models():
        assert m.key in words(out) and f"{m.memory_mib}" in words(out)
        assert {p.name for p in m.profiles} <= words(out)
    demo = run("demo", check=0).stdout
    assert {"3g.40gb", "1g.10gb", "768²", "256²"} <= words(demo) and len(SHORT_UUID.findall(demo)) == 5


def test_a_pending_mode_change_is_shown_whole():
    from migpool import SimulatedBackend

    b = SimulatedBackend("A100-80GB")
    b.set_reset_blockers(0, ["nvidia-persistenced"])  # keeps the change pending until a reset
    assert b.set_mig_mode(0, True) is False
    out = run("gpus", "--simulate", "A100-80GB", check=0).stdout
    assert "Disabled→Enabled" in out and "reset" in out
