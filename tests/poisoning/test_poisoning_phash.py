"""pHash: copies land within a few bits, unrelated images far away, the mirror hash is free and right."""

from __future__ import annotations

import cv2
import numpy as np

from secure_data.poisoning.phash import hamming, phash, phash_pair


def _gray(path):
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def test_reencoded_and_brightened_copies_are_near(clean_root):
    img = cv2.imread(str(clean_root / "images/train/train_00003.jpg"))
    _, q60 = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
    copy = cv2.cvtColor(cv2.convertScaleAbs(cv2.imdecode(q60, 1), alpha=1.08, beta=6), cv2.COLOR_BGR2GRAY)
    assert hamming(phash(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)), phash(copy)) <= 4


def test_unrelated_images_are_far_on_average(clean_root):
    hashes = [phash(_gray(p)) for p in sorted((clean_root / "images/train").glob("*.jpg"))[:60]]
    dists = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert 24 <= float(np.median(dists)) <= 40


def test_mirror_hash_equals_hash_of_the_mirrored_image(clean_root):
    for p in sorted((clean_root / "images/val").glob("*.jpg"))[:10]:
        gray = _gray(p)
        plain, mirrored = phash_pair(gray)
        assert hamming(mirrored, phash(np.ascontiguousarray(gray[:, ::-1]))) <= 2
        assert hamming(plain, mirrored) > 4  # the synthetic scenes are not symmetric
