"""Print cibuildwheel's build identifiers for Linux and macOS and check them.

    python .ci/check_cibw_identifiers.py [--root REPO]

Needs cibuildwheel installed (.ci/cibuildwheel.txt pins the version); no
Docker: --print-build-identifiers only reads the configuration in
pyproject.toml.  The intended set: CPython 3.9 to 3.14, plus 3.15 when this
cibuildwheel knows it, for manylinux and musllinux on x86_64 and aarch64 and
for macOS on x86_64 and arm64; nothing else (no free-threaded "t" builds, no
PyPy, no 32-bit, nothing for Windows).  Exit status 0 when it matches.
"""
import argparse
import os
import re
import subprocess
import sys

REQUIRED = [f"cp3{m}" for m in range(9, 15)]  # cp39 .. cp314
OPTIONAL = ["cp315"]
PLATFORMS = {
    "linux": ["manylinux_x86_64", "manylinux_aarch64", "musllinux_x86_64", "musllinux_aarch64"],
    "macos": ["macosx_x86_64", "macosx_arm64"],
    "windows": [],
}


def identifiers(root, platform):
    env = dict(os.environ, CIBW_PLATFORM=platform)
    for name in list(env):
        # Only pyproject.toml decides; a stray CIBW_BUILD would skew the check.
        if name.startswith("CIBW_") and name != "CIBW_PLATFORM":
            del env[name]
    proc = subprocess.run(
        [sys.executable, "-m", "cibuildwheel", "--print-build-identifiers", "--platform", platform],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
    )
    if proc.returncode != 0:
        sys.exit(f"cibuildwheel --print-build-identifiers --platform {platform} failed:\n{proc.stderr}")
    return proc.stdout.split()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = parser.parse_args(argv)

    problems = []
    for platform, variants in PLATFORMS.items():
        ids = identifiers(args.root, platform)
        print(f"cibuildwheel {platform} ({len(ids)}): {' '.join(ids) or '(none)'}")
        got = set(ids)
        pythons = {i.split("-", 1)[0] for i in ids}
        want = {f"{py}-{v}" for py in REQUIRED + [p for p in OPTIONAL if p in pythons] for v in variants}
        problems += [f"{platform}: missing {i}" for i in sorted(want - got)]
        problems += [f"{platform}: unexpected {i}" for i in sorted(got - want)]
        problems += [f"{platform}: free-threaded build {i}" for i in ids if re.match(r"cp3\d+t-", i)]
    for p in problems:
        print(f"check_cibw_identifiers: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
