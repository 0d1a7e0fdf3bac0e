"""Package round trip and every tampering case, against the real OpenBao with the real AppRoles."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from secure_data.handoff.consumer import open_package
from secure_data.handoff.package import (
    HEADER_FILE,
    MANIFEST_FILE,
    PackageIntegrityError,
    PackageKeyError,
    PackageSignatureError,
    build_package,
    package_path,
    sources_from_directory,
)
from secure_data.vault.errors import VaultPermissionError

IMG0 = "data/images/train/train_00000.jpg.enc"
IMG1 = "data/images/train/train_00001.jpg.enc"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _open_fails(uri, trainer_ks, scratch: Path, **kwargs):
    """open_package must raise before yielding, and leave nothing behind in its scratch parent."""
    scratch.mkdir(exist_ok=True)
    with pytest.raises(Exception) as excinfo, open_package(uri, trainer_ks, scratch_parent=scratch, **kwargs):
        pytest.fail("open_package yielded a tampered package")
    assert list(scratch.iterdir()) == [], "scratch space not wiped after a failure"
    return excinfo


def test_round_trip_gives_byte_identical_files(package, trainer_ks, tmp_path):
    info, source = package
    with open_package(info.uri, trainer_ks, expected_package_id=info.package_id,
                      expected_manifest_digest=info.manifest_digest) as pkg:
        assert _files(pkg.path) == _files(source)
        assert pkg.package_id == info.package_id
        # private scratch: the tree is ours only
        assert stat.S_IMODE(os.stat(pkg.scratch).st_mode) == 0o700
        assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in pkg.path.rglob("*") if p.is_file())
        if Path("/dev/shm").is_dir():
            assert str(pkg.scratch).startswith("/dev/shm/")
        # the training config points at the scratch copy, keeps only safe keys
        import yaml

        config = yaml.safe_load(pkg.data_yaml.read_text())
        assert config["path"] == str(pkg.path) and config["names"] == {0: "face", 1: "plate"}
        assert os.fspath(pkg) == str(pkg.path)
        scratch = pkg.scratch
    assert not scratch.exists()


def test_package_holds_no_plaintext(package):
    info, source = package
    blobs = b"".join(_files(package_path(info.uri)).values())
    for rel, data in _files(source).items():
        probe = data[len(data) // 2:len(data) // 2 + 24] if len(data) > 48 else data
        assert probe not in blobs, f"plaintext of {rel} found in the package"


def test_scratch_is_wiped_when_the_caller_fails(package, trainer_ks, tmp_path):
    info, _ = package
    with pytest.raises(RuntimeError, match="training crashed"), \
            open_package(info.uri, trainer_ks, scratch_parent=tmp_path) as pkg:
        scratch = pkg.scratch
        raise RuntimeError("training crashed")
    assert not scratch.exists()


def test_flipped_ciphertext_byte_is_refused(package, trainer_ks, tmp_path):
    info, _ = package
    target = package_path(info.uri) / IMG0
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and exc.value.path == IMG0
    assert IMG0 in str(exc.value)


def test_truncated_file_is_refused(package, trainer_ks, tmp_path):
    info, _ = package
    target = package_path(info.uri) / IMG0
    target.write_bytes(target.read_bytes()[:-100])
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and exc.value.path == IMG0
    assert "truncated" in str(exc.value)


def test_swapped_files_are_refused(package, trainer_ks, tmp_path):
    info, _ = package
    root = package_path(info.uri)
    a, b = (root / IMG0).read_bytes(), (root / IMG1).read_bytes()
    (root / IMG0).write_bytes(b)
    (root / IMG1).write_bytes(a)
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and exc.value.path in (IMG0, IMG1)


def test_swapped_files_of_equal_size_fail_authentication(package, trainer_ks, tmp_path):
    """Same-size files pass the size check: the AEAD (path in the associated data) must catch the swap."""
    info, _ = package
    root = package_path(info.uri)
    first = root / "data/labels/train/train_00000.txt.enc"
    forged = root / "data/labels/train/train_00001.txt.enc"
    size = first.stat().st_size
    # Make a same-size stand-in: the other label's ciphertext padded/cut to the size (still a valid header).
    other = forged.read_bytes()
    first.write_bytes((other + b"\0" * size)[:size])
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and exc.value.path == "data/labels/train/train_00000.txt.enc"
    assert "decryption failed" in str(exc.value) or "differs" in str(exc.value)


def test_added_file_is_refused(package, trainer_ks, tmp_path):
    info, _ = package
    extra = package_path(info.uri) / "data/images/train/extra.jpg.enc"
    extra.write_bytes((package_path(info.uri) / IMG0).read_bytes())
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and exc.value.path == "data/images/train/extra.jpg.enc"
    assert "not in the signed manifest" in str(exc.value)


def test_removed_file_is_refused(package, trainer_ks, tmp_path):
    info, _ = package
    (package_path(info.uri) / IMG1).unlink()
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and exc.value.path == IMG1
    assert "missing" in str(exc.value)


def test_symlinked_file_is_refused(package, trainer_ks, tmp_path):
    info, _ = package
    target = package_path(info.uri) / IMG0
    stash = tmp_path / "stash.enc"
    shutil.move(target, stash)
    target.symlink_to(stash)
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and exc.value.path == IMG0


def test_edited_manifest_is_refused(package, trainer_ks, tmp_path):
    info, _ = package
    manifest = package_path(info.uri) / MANIFEST_FILE
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[1])
    record["sha256"] = "0" * 64
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    manifest.write_text("\n".join(lines) + "\n")
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageSignatureError and "manifest.jsonl was modified" in str(exc.value)

    # ... and fixing up the digest in the (unsigned) header does not help: the signature covers it.
    from secure_data.dataset.manifest import digest_of

    header_path = package_path(info.uri) / HEADER_FILE
    header = json.loads(header_path.read_text())
    header["manifest_digest"] = digest_of(manifest.read_bytes())
    header_path.write_text(json.dumps(header))
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageSignatureError and "not valid under the trusted signing key" in str(exc.value)


def test_package_replayed_under_another_id_is_refused(package, small_dataset, sanitizer_ks, trainer_ks,
                                                      tmp_path):
    info, _ = package
    root = package_path(info.uri)
    # 1. the same signed package copied to another name (as if it were another package)
    replay = root.parent / "small-replayed"
    shutil.copytree(root, replay)
    exc = _open_fails(replay, trainer_ks, tmp_path / "s")
    assert exc.type is PackageSignatureError and "replayed" in str(exc.value)
    # 2. an older, valid package served where the asset event announced a newer one
    newer = build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer_ks, name="small")
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s", expected_package_id=newer.package_id)
    assert exc.type is PackageSignatureError and newer.package_id in str(exc.value)
    # 3. one file of the other package spliced in (valid ciphertext under another key and package id)
    (root / IMG0).write_bytes((package_path(newer.uri) / IMG0).read_bytes())
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and exc.value.path == IMG0


def test_package_signed_by_an_untrusted_key_is_refused(small_dataset, root_client, trainer_ks, tmp_path):
    from secure_data.vault.keyservice import VaultKeyService

    root_client.secrets.transit.create_key("rogue-signing", key_type="ed25519")
    rogue = VaultKeyService.from_client(root_client, signing_key="rogue-signing")
    info = build_package(tmp_path / "packages", sources_from_directory(small_dataset), rogue, name="small")
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageSignatureError and "trusted signing key" in str(exc.value)


def test_wrapped_key_from_another_package_does_not_decrypt(package, small_dataset, sanitizer_ks, trainer_ks,
                                                           tmp_path):
    """The wrapped key is outside the signature (so it can be rewrapped): swapping it must still fail."""
    info, _ = package
    other = build_package(tmp_path / "other", sources_from_directory(small_dataset), sanitizer_ks, name="small")
    header_path = package_path(info.uri) / HEADER_FILE
    header = json.loads(header_path.read_text())
    header["data_key"] = json.loads((package_path(other.uri) / HEADER_FILE).read_text())["data_key"]
    header_path.write_text(json.dumps(header))
    exc = _open_fails(info.uri, trainer_ks, tmp_path / "s")
    assert exc.type is PackageIntegrityError and "decryption failed" in str(exc.value)


def test_sanitizer_cannot_decrypt_its_own_package(package, sanitizer_ks, tmp_path):
    info, _ = package
    exc = _open_fails(info.uri, sanitizer_ks, tmp_path / "s")
    assert exc.type is PackageKeyError
    assert isinstance(exc.value.__cause__, VaultPermissionError)
    assert "decrypt" in str(exc.value)


def test_trainer_cannot_sign_or_build_a_package(small_dataset, trainer_ks, tmp_path):
    with pytest.raises(VaultPermissionError):
        trainer_ks.sign(b"a forged package statement")
    with pytest.raises(VaultPermissionError):
        build_package(tmp_path / "packages", sources_from_directory(small_dataset), trainer_ks, name="forged")
    assert not (tmp_path / "packages").exists()  # refused before anything was written


def test_a_source_changed_after_hashing_aborts_the_whole_package(small_dataset, sanitizer_ks, tmp_path):
    sources = sources_from_directory(small_dataset)
    (small_dataset / "images/train/train_00003.jpg").write_bytes(b"swapped in after the manifest was made")
    from secure_data.dataset.manifest import IntegrityError

    with pytest.raises(IntegrityError, match="train_00003.jpg"):
        build_package(tmp_path / "packages", sources, sanitizer_ks, name="small", package_id="fixed-id")
    assert not (tmp_path / "packages" / "fixed-id").exists()
    assert list((tmp_path / "packages").iterdir()) == []  # no partial directory either


def test_a_name_too_long_for_its_ciphertext_is_refused_before_anything_is_written(sanitizer_ks, tmp_path):
    from secure_data.handoff.package import PackageFormatError
    from secure_data_testkit.datasets import make_yolo_dataset

    root = make_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1, seed=2)
    stem = "c" * 249  # "<stem>.jpg" is 253 bytes (legal); "<stem>.jpg.enc" would be 257
    (root / "images/train/train_00000.jpg").rename(root / f"images/train/{stem}.jpg")
    with pytest.raises(PackageFormatError, match=f"images/train/{stem}.jpg.*NAME_MAX 255"):
        build_package(tmp_path / "packages", sources_from_directory(root), sanitizer_ks, name="long")
    assert not (tmp_path / "packages").exists()  # no key made, no directory, no partial ciphertext


def test_the_longest_name_integrity_accepts_round_trips(sanitizer_ks, trainer_ks, tmp_path):
    from secure_data.dataset.layout import MAX_NAME_BYTES
    from secure_data_testkit.datasets import make_yolo_dataset

    root = make_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1, seed=2)
    stem = "c" * (MAX_NAME_BYTES - 4)
    (root / "images/train/train_00000.jpg").rename(root / f"images/train/{stem}.jpg")
    (root / "labels/train/train_00000.txt").rename(root / f"labels/train/{stem}.txt")
    info = build_package(tmp_path / "packages", sources_from_directory(root), sanitizer_ks, name="long")
    (tmp_path / "scratch").mkdir()
    with open_package(info.uri, trainer_ks, scratch_parent=tmp_path / "scratch") as pkg:
        assert _files(pkg.path) == _files(root)


def test_fsync_tree_reaches_every_file_of_a_package(package):
    from secure_data.dataset.atomic import fsync_tree
    from secure_data.handoff.package import package_path

    info, _ = package
    root = package_path(info.uri)
    assert fsync_tree(root) == info.counts["files"] + 2  # every ciphertext, the manifest and the header
