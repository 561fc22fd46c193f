"""The catalog and the planner from Python: no GPU needed (docs: guides/layouts.md).

python examples/catalog_and_planner.py
"""

import migpool

# --8<-- [start:plan]
gpu = migpool.catalog.lookup("A100-80GB")  # also "NVIDIA A100-SXM4-80GB" (the NVML name), "H100", "B200", ...
print(gpu.profile("MIG 3g.40gb").name)  # forgiving: '3g.40gb', 'MIG 3g.40gb', 9 (the profile id)
for inst in migpool.plan(gpu, {"3g.40gb": 2}):  # or {"4g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1}
    print(inst.profile.name, inst.start, inst.size)  # 3g.40gb 0 4, then 3g.40gb 4 4
print(migpool.max_addable(gpu, "1g.10gb", migpool.plan(gpu, {"4g.40gb": 1})))  # 3
four = migpool.Layout.of(partitions=4, min_memory="16GB")
for profile, count in four.resolve(gpu):
    print(profile.name, count)  # 1g.20gb 4: the smallest profile with 16 GB, four times
# --8<-- [end:plan]

# --8<-- [start:errors]
try:
    migpool.plan(gpu, {"3g.40gb": 3})
except migpool.MigpoolError as e:  # every migpool error derives from it, and says what would work
    print(f"{type(e).__name__}: {e}")
# --8<-- [end:errors]
