"""Hand-off crypto throughput: chunked streaming AEAD vs raw AES-GCM on one buffer, and peak memory.

    python bench/handoff_crypto.py                 # 100 KB, 1 MB, 10 MB, 100 MB + package round trip
    python bench/handoff_crypto.py --sizes 1MB,10MB --repeat 5 --no-vault

Rows per size, each measured in a fresh subprocess so its peak RSS (ru_maxrss) is its own:

* ``raw enc`` / ``raw dec`` (the peer): ``cryptography`` ``AESGCM.encrypt/decrypt`` on the
  whole file as one in-memory buffer: one call, no I/O, no hashing;
* ``AEAD enc`` / ``AEAD dec``: ``secure_data.handoff.stream`` (HKDF per file, 1 MiB GCM
  segments), memory to memory, digests off: the cost of the construction itself;
* ``file enc`` / ``file dec``: the same, file to file, with the plaintext and ciphertext
  SHA-256 the signed manifest needs (what building / opening a package costs per byte);
* ``SHA-256``: hashlib on the whole buffer, the floor for anything that must hash every byte.

The best of ``--repeat`` runs is reported (plaintext MB/s, MB = 10^6 bytes). With Vault
(default) a real OpenBao dev server is started and a package holding one file of the largest
size is built (sanitizer identity) and opened (trainer identity): that line includes Transit
calls, fsync, hashing and the scratch copy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import print_header  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
DEFAULT_SIZES = "100KB,1MB,10MB,100MB"
MODES = tuple(f"{op}-{where}-{what}" for op in ("enc", "dec") for where, what in
              (("mem", "raw"), ("mem", "aead"), ("file", "raw"), ("file", "aead"), ("file", "full"))) + ("sha-mem-raw",)


def parse_size(text: str) -> int:
    text = text.strip().upper()
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def human(n: int) -> str:
    for unit in ("GB", "MB", "KB"):
        if n >= UNITS[unit]:
            return f"{n / UNITS[unit]:g} {unit}"
    return f"{n} B"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------- one measurement (child process)

class _Sink:
    """A writer that drops what it gets (the in-memory AEAD rows measure the cipher, not a copy)."""

    def write(self, data) -> int:
        return len(data)


def child(mode: str, path: str, repeat: int) -> dict:
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from secure_data.handoff import stream

    key = bytes(range(32))
    ad = b'{"package_id":"bench","path":"file.bin"}'
    size = os.path.getsize(path)
    enc_path, out_path = path + ".enc", path + ".out"
    raw_path = path + ".raw"
    chunk = stream.DEFAULT_CHUNK_SIZE
    baseline_rss = _peak_rss_mb()
    op, where, what = mode.split("-")  # e.g. enc-mem-raw, dec-file-full
    nonce = os.urandom(12)
    data = Path(path).read_bytes() if where == "mem" else b""
    if op == "dec":  # make the ciphertext once, outside the timed loop
        if what == "raw":
            sealed = AESGCM(key).encrypt(nonce, Path(path).read_bytes(), ad)
            if where == "file":
                Path(raw_path).write_bytes(sealed)
                sealed = b""
        else:
            with open(path, "rb") as reader, open(enc_path, "wb") as writer:
                stream.encrypt_file(key, ad, reader, writer)
            sealed = Path(enc_path).read_bytes() if where == "mem" else b""
    digests = what == "full"
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        if mode == "sha-mem-raw":
            hashlib.sha256(data).hexdigest()
        elif (op, where, what) == ("enc", "mem", "raw"):
            AESGCM(key).encrypt(nonce, data, ad)
        elif (op, where, what) == ("dec", "mem", "raw"):
            AESGCM(key).decrypt(nonce, sealed, ad)
        elif (op, where, what) == ("enc", "file", "raw"):  # the naive whole-file way: read, seal, write
            blob = AESGCM(key).encrypt(nonce, Path(path).read_bytes(), ad)
            Path(raw_path).write_bytes(blob)
            del blob
        elif (op, where, what) == ("dec", "file", "raw"):
            blob = AESGCM(key).decrypt(nonce, Path(raw_path).read_bytes(), ad)
            Path(out_path).write_bytes(blob)
            del blob
        elif (op, where) == ("enc", "mem"):
            stream.encrypt_chunks(key, ad, stream.iter_buffer(data, chunk), _Sink().write, size_hint=size,
                                  hash_plaintext=False, hash_ciphertext=False)
        elif (op, where) == ("dec", "mem"):
            stream.decrypt_bytes(key, ad, sealed, _Sink().write, hashes=False)
        elif (op, where) == ("enc", "file"):
            with open(path, "rb") as reader, open(enc_path, "wb") as writer:
                stream.encrypt_file(key, ad, reader, writer, hashes=digests)
        elif (op, where) == ("dec", "file"):
            with open(enc_path, "rb") as reader, open(out_path, "wb") as writer:
                result = stream.decrypt_file(key, ad, reader, writer.write, hashes=digests)
            assert result.plaintext_size == size
        else:
            raise ValueError(mode)
        best = min(best, time.perf_counter() - start)
    for leftover in (enc_path, out_path, raw_path):
        Path(leftover).unlink(missing_ok=True)
    return {"mode": mode, "size": size, "seconds": best, "mb_s": size / best / 1e6,
            "peak_rss_mb": _peak_rss_mb(), "baseline_rss_mb": baseline_rss}


def pair_child(op: str, path: str, repeat: int) -> dict:
    """Raw whole-file and streaming file-to-file, alternated in one process: both see the same
    load, cache and CPU frequency, so their ratio does not drift with what else the machine does
    between two subprocesses (the per-mode rows above are separate processes, for their own RSS)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from secure_data.handoff import stream

    key = bytes(range(32))
    ad = b'{"package_id":"bench","path":"file.bin"}'
    size = os.path.getsize(path)
    nonce = os.urandom(12)
    enc_path, out_path, raw_path = path + ".penc", path + ".pout", path + ".praw"
    Path(raw_path).write_bytes(AESGCM(key).encrypt(nonce, Path(path).read_bytes(), ad))
    with open(path, "rb") as reader, open(enc_path, "wb") as writer:
        stream.encrypt_file(key, ad, reader, writer)

    def raw() -> None:
        if op == "enc":
            Path(raw_path).write_bytes(AESGCM(key).encrypt(nonce, Path(path).read_bytes(), ad))
        else:
            Path(out_path).write_bytes(AESGCM(key).decrypt(nonce, Path(raw_path).read_bytes(), ad))

    def streamed() -> None:
        if op == "enc":
            with open(path, "rb") as reader, open(enc_path, "wb") as writer:
                stream.encrypt_file(key, ad, reader, writer, hashes=False)
        else:
            with open(enc_path, "rb") as reader, open(out_path, "wb") as writer:
                stream.decrypt_file(key, ad, reader, writer.write, hashes=False)

    best = {"raw": float("inf"), "stream": float("inf")}
    for _ in range(repeat):
        for name, fn in (("raw", raw), ("stream", streamed)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    for leftover in (enc_path, out_path, raw_path):
        Path(leftover).unlink(missing_ok=True)
    return {"op": op, "size": size, "raw_mb_s": size / best["raw"] / 1e6,
            "stream_mb_s": size / best["stream"] / 1e6, "ratio": best["raw"] / best["stream"]}


def run_child(mode: str, path: Path, repeat: int) -> dict:
    flag = "--pair" if mode in ("enc", "dec") else "--child"
    out = subprocess.run([sys.executable, __file__, flag, mode, str(path), str(repeat)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- package round trip with real Vault

def _raw_loop(files: list[Path], out_dir: Path, op: str, key: bytes, nonce: bytes, ad: bytes) -> float:
    """The peer for many small files: one ``AESGCM`` call per whole file, read_bytes / write_bytes."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    out_dir.mkdir(exist_ok=True)
    start = time.perf_counter()
    for path in files:
        data = path.read_bytes()
        blob = aead.encrypt(nonce, data, ad) if op == "enc" else aead.decrypt(nonce, data, ad)
        (out_dir / path.name).write_bytes(blob)
    return time.perf_counter() - start


def many_files_round_trip(count: int, size: int, workdir: Path) -> dict:
    """A package of ``count`` files of ``size`` bytes (images are ~100 KB): build and open with real
    OpenBao, against the raw one-call-per-file loop over the same files, in the same run."""
    from secure_data.handoff.consumer import open_package
    from secure_data.handoff.package import build_package, sources_from_directory
    from secure_data.vault.keyservice import VaultKeyService
    from secure_data_testkit.openbao import OpenBaoServer
    from secure_data_testkit.vault_fixtures import bootstrap_test_vault

    src = workdir / "many-src"
    (src / "images").mkdir(parents=True)
    files = []
    for i in range(count):
        path = src / "images" / f"{i:06d}.jpg"
        path.write_bytes(os.urandom(size))
        files.append(path)
    key, nonce, ad = os.urandom(32), os.urandom(12), b"bench"
    raw_enc = _raw_loop(files, workdir / "raw-enc", "enc", key, nonce, ad)
    sealed = sorted((workdir / "raw-enc").iterdir())
    raw_dec = _raw_loop(sealed, workdir / "raw-dec", "dec", key, nonce, ad)
    with OpenBaoServer() as server:
        creds = bootstrap_test_vault(server)
        sanitizer = VaultKeyService.for_approle(server.url, creds.sanitizer.role_id, creds.sanitizer.secret_id)
        trainer = VaultKeyService.for_approle(server.url, creds.trainer.role_id, creds.trainer.secret_id)
        sources = sources_from_directory(src)
        start = time.perf_counter()
        info = build_package(workdir / "many-packages", sources, sanitizer, name="many")
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        with open_package(info.uri, trainer) as pkg:
            open_s = time.perf_counter() - start
            assert len(list((pkg.path / "images").iterdir())) == count
    return {"count": count, "size": size, "raw_enc_files_s": count / raw_enc, "raw_dec_files_s": count / raw_dec,
            "build_files_s": count / build_s, "open_files_s": count / open_s}


def package_round_trip(size: int, workdir: Path) -> dict:
    from secure_data.handoff.consumer import open_package
    from secure_data.handoff.package import build_package, sources_from_directory
    from secure_data.vault.keyservice import VaultKeyService
    from secure_data_testkit.openbao import OpenBaoServer
    from secure_data_testkit.vault_fixtures import bootstrap_test_vault

    src = workdir / "pkg-src"
    src.mkdir()
    with open(src / "blob.bin", "wb") as fh:
        for _ in range(size // (1 << 20)):
            fh.write(os.urandom(1 << 20))
        fh.write(os.urandom(size % (1 << 20)))
    with OpenBaoServer() as server:
        creds = bootstrap_test_vault(server)
        sanitizer = VaultKeyService.for_approle(server.url, creds.sanitizer.role_id, creds.sanitizer.secret_id)
        trainer = VaultKeyService.for_approle(server.url, creds.trainer.role_id, creds.trainer.secret_id)
        sources = sources_from_directory(src)  # hashes once (the pipeline gets this from the stage manifest)
        start = time.perf_counter()
        info = build_package(workdir / "packages", sources, sanitizer, name="bench")
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        with open_package(info.uri, trainer) as pkg:  # default scratch: /dev/shm when it has room
            open_s = time.perf_counter() - start
            assert (pkg.path / "blob.bin").stat().st_size == size
    return {"size": size, "build_mb_s": size / build_s / 1e6, "open_mb_s": size / open_s / 1e6,
            "build_s": build_s, "open_s": open_s}


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-vault", action="store_true", help="skip the package round trips with OpenBao")
    parser.add_argument("--many", type=int, default=1000, help="files in the many-small-files package (0: skip)")
    parser.add_argument("--many-size", default="100KB", help="size of each of those files")
    parser.add_argument("--workdir", default=None, help="where test files go (default: a temp dir on disk)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "REPEAT"), help=argparse.SUPPRESS)
    parser.add_argument("--pair", nargs=3, metavar=("OP", "PATH", "REPEAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pair:
        op, path, repeat = args.pair
        print(json.dumps(pair_child(op, path, int(repeat))))
        return 0
    if args.child:
        mode, path, repeat = args.child
        print(json.dumps(child(mode, path, int(repeat))))
        return 0

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="handoff-bench-", dir=args.workdir))
    rows = []
    try:
        for size in sizes:
            path = work / f"plain-{size}.bin"
            with open(path, "wb") as fh:
                remaining = size
                while remaining:
                    step = min(remaining, 1 << 20)
                    fh.write(os.urandom(step))
                    remaining -= step
            # Small files are fast: repeat more so the timer resolution does not dominate.
            repeat = args.repeat * (20 if size < 10**6 else 4 if size < 10**7 else 1)
            res = {mode: run_child(mode, path, repeat) for mode in MODES}
            res["pairs"] = {op: run_child(op, path, repeat) for op in ("enc", "dec")}
            rows.append((size, res))
            for suffix in ("", ".enc"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        package = None if args.no_vault else package_round_trip(max(sizes), work)
        many = None if args.no_vault or not args.many else many_files_round_trip(args.many, parse_size(args.many_size),
                                                                                 work)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    print_header("secure-data hand-off crypto benchmark", "bench/handoff_crypto.py", sys.argv[1:])
    print(f"cryptography {_version('cryptography')}")
    print()
    for op, title in (("enc", "encrypt"), ("dec", "decrypt")):
        print(f"\n{title} (MB/s of plaintext; ratio = streaming AEAD / raw AES-GCM one call)\n")
        print("| size | raw, memory | stream AEAD, memory | ratio | raw, file to file | stream AEAD, file to file "
              "| ratio | stream + both SHA-256, file to file | peak RSS MB: raw file / stream file / stream + SHA |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size, r in rows:
            mb = {m: r[m]["mb_s"] for m in MODES}
            rss = {m: r[m]["peak_rss_mb"] for m in MODES}
            print(f"| {human(size)} | {mb[op + '-mem-raw']:.0f} | {mb[op + '-mem-aead']:.0f} "
                  f"| {mb[op + '-mem-aead'] / mb[op + '-mem-raw']:.0%} | {mb[op + '-file-raw']:.0f} "
                  f"| {mb[op + '-file-aead']:.0f} | {mb[op + '-file-aead'] / mb[op + '-file-raw']:.0%} "
                  f"| {mb[op + '-file-full']:.0f} | {rss[op + '-file-raw']:.0f} / {rss[op + '-file-aead']:.0f} / "
                  f"{rss[op + '-file-full']:.0f} |")
    print("\nfile to file, raw and stream alternated in one process (best of the repeats; the fair ratio)\n")
    print("| size | encrypt raw MB/s | encrypt stream MB/s | encrypt ratio | decrypt raw MB/s | decrypt stream MB/s "
          "| decrypt ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size, r in rows:
        e, d = r["pairs"]["enc"], r["pairs"]["dec"]
        print(f"| {human(size)} | {e['raw_mb_s']:.0f} | {e['stream_mb_s']:.0f} | {e['ratio']:.0%} "
              f"| {d['raw_mb_s']:.0f} | {d['stream_mb_s']:.0f} | {d['ratio']:.0%} |")
    print("\nSHA-256 alone (hashlib, one buffer), MB/s: "
          + ", ".join(f"{human(size)} {r['sha-mem-raw']['mb_s']:.0f}" for size, r in rows))
    if rows:
        print(f"process RSS before measuring: {rows[0][1]['enc-file-aead']['baseline_rss_mb']:.0f} MB")
    if package:
        print(f"\npackage round trip, one {human(package['size'])} file, real OpenBao: "
              f"build {package['build_mb_s']:.0f} MB/s ({package['build_s']:.2f} s), "
              f"open {package['open_mb_s']:.0f} MB/s ({package['open_s']:.2f} s) "
              "[Transit calls, fsync, hashing, scratch copy included]")
    if many:
        print(f"\nmany small files, one package of {many['count']} x {human(many['size'])}, real OpenBao, files/s: "
              f"build {many['build_files_s']:.0f} (raw AES-GCM encrypt loop {many['raw_enc_files_s']:.0f}: "
              f"{many['build_files_s'] / many['raw_enc_files_s']:.0%}), open {many['open_files_s']:.0f} "
              f"(raw decrypt loop {many['raw_dec_files_s']:.0f}: {many['open_files_s'] / many['raw_dec_files_s']:.0%}) "
              "[the package side also fsyncs every file, hashes plaintext and ciphertext, signs, verifies]")
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)



if __name__ == "__main__":
    sys.exit(main())
