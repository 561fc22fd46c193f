"""Planner latency: every answer (a plan, or a refusal with its explanation) for every catalog GPU, against a
brute-force baseline (the same depth-first search without counting bounds, symmetry breaking or memo), in one run.

Requests per model: each profile × 1 .. max_instances + 1 (the last one infeasible), the full GPU, and mixes.
'cold' clears the planner's memo before every request; 'warm' asks again. Goal: every answer under 1 ms.

    python benchmarks/planner.py
"""

from __future__ import annotations

import time

from migpool.errors import LayoutError
from migpool.mig import catalog
from migpool.mig.planner import _expand, _fits, _search_cached, explain, plan


def brute(gpu, placed, todo):
    if not todo:
        return placed
    p, rest = todo[0], todo[1:]
    for pl in p.placements:
        if _fits(gpu, placed, p, pl):
            from migpool.mig.planner import PlannedInstance

            found = brute(gpu, placed + [PlannedInstance(p, pl)], rest)
            if found is not None:
                return found
    return None


def requests(gpu):
    out = []
    for p in gpu.profiles:
        out += [{p.name: n} for n in range(1, p.max_instances + 2)]
    names = [p.name for p in gpu.profiles if not p.name.endswith("+me")]
    for a in names:
        for b in names:
            if a < b:
                out += [{a: 1, b: 2}, {a: 2, b: 3}]
    return out


def answer(fn, gpu, req):
    t = time.perf_counter()
    try:
        fn(gpu, req)
        ok = True
    except LayoutError:
        ok = False
    return time.perf_counter() - t, ok


def baseline(gpu, req):
    todo = _expand(gpu, req)
    if brute(gpu, [], todo) is None:
        raise LayoutError(explain(gpu, todo, ()))


def main() -> None:
    rows = []
    for gpu in catalog.models():
        reqs = requests(gpu)
        cold, warm, base, infeasible = [], [], [], 0
        for req in reqs:
            _search_cached.cache_clear()
            t, ok = answer(plan, gpu, req)
            cold.append((t, req))
            warm.append(answer(plan, gpu, req)[0])
            b, bok = answer(baseline, gpu, req)
            assert ok == bok, (gpu.key, req)  # the same answers
            base.append((b, req))
            infeasible += not ok
        rows.append(
            (
                gpu.key,
                len(reqs),
                infeasible,
                max(cold, key=lambda x: x[0]),
                max(warm),
                max(base, key=lambda x: x[0]),
                sum(t for t, _ in cold),
                sum(t for t, _ in base),
            )
        )
    print(
        f"{'model':<15} {'asks':>4} {'no':>3} {'worst cold':>11} {'worst warm':>11} {'worst brute':>12} {'total ×':>8}"
    )
    for key, n, no, (wc, _), ww, (wb, _wreq), tc, tb in rows:
        print(f"{key:<15} {n:>4} {no:>3} {wc * 1e3:>8.3f} ms {ww * 1e3:>8.3f} ms {wb * 1e3:>9.3f} ms {tc / tb:>8.3f}")
    worst = max(r[3][0] for r in rows)
    worst_req = max(rows, key=lambda r: r[3][0])
    print(
        f"worst answer over every model: {worst * 1e3:.3f} ms cold ({worst_req[0]} {worst_req[3][1]}), "
        f"goal < 1 ms: {'met' if worst < 1e-3 else 'MISSED'}; brute force's worst: "
        f"{max(r[5][0] for r in rows) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
