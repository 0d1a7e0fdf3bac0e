"""The benchmark's photographs leave out every picture the demo detector was trained on as a negative.

Judged by scikit-image itself: each negative is loaded through its ``skimage.data`` function (what
``add_real_negatives`` trains on) and compared pixel for pixel with the photographs kept. The file-name
map once guessed ``colorwheel.png`` for ``colorwheel()``, which loads ``color.png``: that photograph
stayed in the benchmark while the detector had seen it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
import skimage.io

from secure_data_testkit.attacks import model_negative_photos, photo_paths
from secure_data_testkit.models import NEGATIVE_PHOTOS


def _negatives() -> list[np.ndarray]:
    out = []
    for name in NEGATIVE_PHOTOS:
        a = getattr(skimage.data, name)()
        out.append(np.asarray(a[0] if isinstance(a, tuple) else a))
    return out


def test_every_negative_maps_to_the_file_its_loader_reads():
    files = {p.name: p for p in Path(skimage.data.__file__).parent.glob("*")}
    for name, arr in zip(NEGATIVE_PHOTOS, _negatives(), strict=True):
        matching = [f for f in model_negative_photos() if f in files
                    and np.array_equal(np.asarray(skimage.io.imread(files[f])), arr)]
        assert matching, f"no excluded file holds the pixels of skimage.data.{name}()"


def test_no_kept_photograph_is_a_negative():
    negatives = _negatives()
    kept = photo_paths(model_negative_photos())
    assert len(kept) >= 4
    for path in kept:
        img = np.asarray(skimage.io.imread(path))
        assert not any(img.shape == n.shape and np.array_equal(img, n) for n in negatives), path.name
