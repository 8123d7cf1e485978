"""Profile one study of the quick suite on fewer slices (docs/performance.md §1).

Usage: python scripts/profile_study.py STUDY [SAMPLES [MODEL ...]]   (e.g. attack 1, or
sweep-delta 4 mnmmol-4x-delta0.3: only those models). Prints the wall-clock and the 45 most
expensive functions (cProfile, cumulative); for a sampling
profile run it under py-spy instead: ``py-spy record -f raw -o spy.txt -- python scripts/profile_study.py attack 1``.
"""

import cProfile
import pstats
import sys
import tempfile
import time
import tomllib

from robustkit.locations import shipped_suites
from robustkit.studies import make_config, run

name = sys.argv[1]
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 1
models = {"models": sys.argv[3:]} if len(sys.argv) > 3 else {}
data = tomllib.loads(shipped_suites()["quick"].read_text(encoding="utf-8"))
config = make_config(name, {**data["defaults"], **data[name], "samples": samples, **models})
t0 = time.perf_counter()
profile = cProfile.Profile()
profile.enable()
run(name, config, device="cpu", reports_dir=tempfile.mkdtemp(), progress=False)
profile.disable()
print(name, "wall", time.perf_counter() - t0)
pstats.Stats(profile).sort_stats("cumulative").print_stats(45)
