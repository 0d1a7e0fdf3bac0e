"""Issue 16: poisoning reads, hash-verifies and decodes each image once for all checks.

Before ``poisoning/imagepass.py`` an image was read and decoded by the template pass, the feature pass,
the presence checks, the backbone features and the duplicate verification (2-4 times each with the
model on). The counters wrap the one function every verified read goes through
(``dataset.manifest.open_inside``) and the one image decoder.
"""

from __future__ import annotations

import importlib
from collections import Counter

import pytest

import secure_data.dataset.manifest as manifest_mod
import secure_data.poisoning.features as features_mod
from secure_data.dataset.stage import open_upstream
from secure_data.poisoning import PoisoningConfig
from secure_data.poisoning.samples import collect_samples
from secure_data.poisoning.stage import analyse
from secure_data_testkit.attacks import inject_attack, integrity_like_manifest, make_clean_dataset


@pytest.fixture(scope="module")
def small_clean(tmp_path_factory):
    return make_clean_dataset(tmp_path_factory.mktemp("one_read") / "clean", n_train=80, n_val=20, seed=5)


@pytest.fixture(scope="module")
def model_config():
    from secure_data_testkit.models import demo_detector

    path, sha = demo_detector()
    return PoisoningConfig(backbone_model=str(path), backbone_model_sha256=sha, backbone_device="cpu")


def _count(monkeypatch):
    reads: Counter[str] = Counter()
    decodes = Counter(n=0)
    real_open, real_decode = manifest_mod.open_inside, features_mod.decode_bgr

    def open_inside(root, relpath, *args, **kwargs):
        reads[str(relpath)] += 1
        return real_open(root, relpath, *args, **kwargs)

    def decode_bgr(data):
        decodes["n"] += 1
        return real_decode(data)

    monkeypatch.setattr(manifest_mod, "open_inside", open_inside)
    for name in ("secure_data.poisoning.features", "secure_data.poisoning.imagepass", "secure_data.poisoning.stage"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # the code before this test had no imagepass
            continue
        monkeypatch.setattr(module, "decode_bgr", decode_bgr, raising=False)
    return reads, decodes


@pytest.mark.parametrize("with_model", [False, True])
def test_each_image_is_read_and_decoded_once(small_clean, tmp_path, monkeypatch, model_config, with_model):
    # label flips by near-copy: duplicate candidates exist, so the pair verification has work to do
    ds = inject_attack(small_clean, tmp_path / "flip", attack="label_flip", rate=0.1, seed=2)
    upstream, manifest = open_upstream(integrity_like_manifest(ds.root, tmp_path / "m"))
    samples = collect_samples(manifest.records)
    config = model_config if with_model else PoisoningConfig()
    reads, decodes = _count(monkeypatch)
    analysis = analyse(upstream.data_root, samples, config, class_names={0: "face", 1: "plate"})

    assert any(f.check == "duplicate_label_conflict" for f in analysis.findings)  # the verification ran
    images = {s.image.path for s in samples}
    assert {p: n for p, n in reads.items() if p in images and n != 1} == {}
    assert images <= set(reads)
    assert decodes["n"] == len(samples)
