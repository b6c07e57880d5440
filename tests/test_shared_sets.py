"""Reading the real LMDB sets in ../shared (skipped cleanly where the folder is absent)."""
import os
import random

import pytest

from openrec.data.sources import LMDBSource

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
SETS = {"benchmarks/IIIT5k_3000": 3000, "benchmarks/SVT_647": 647, "benchmarks/IC13_857": 857,
        "real_train/IIIT5k_train_2000": 2000, "real_train/SVT_train_257": 257, "real_train/IC15_train_4468": 4468}


@pytest.mark.parametrize("name,count", sorted(SETS.items()))
def test_shared_lmdb_reads(name, count):
    path = os.path.join(SHARED, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} not present")
    src = LMDBSource(path)
    assert len(src) == count and src.missing_wh == 0
    ratios = src.aspect_ratios(0, 12)
    assert ratios.min() >= 1 and ratios.max() <= 12
    for i in (0, count // 2, count - 1):
        image, label = src.load(i, 0, random.Random(0))
        assert image.ndim == 3 and image.shape[0] <= 64 and label
