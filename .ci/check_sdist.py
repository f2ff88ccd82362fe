"""Fail if the sdist lacks a file needed to build, type-check or test shmipc.

    python .ci/check_sdist.py dist/shmipc-X.Y.Z.tar.gz [--root REPO]

Needed: every git-tracked file under csrc/, shmipc/, tests/, examples/ and
docs/, plus the top-level build and legal files (README.md, LICENSE,
pyproject.toml, setup.py, MANIFEST.in, and Makefile/CHANGELOG.md when
tracked).  Without git (an unpacked sdist, say) the files on disk stand in for
the tracked ones.  Also fails on build debris in the sdist (compiled
objects, __pycache__).  Exit status 0 when complete, 1 otherwise.
"""
import argparse
import os
import subprocess
import sys
import tarfile

DIRS = ("csrc", "shmipc", "tests", "examples", "docs")
REQUIRED_TOP = ("README.md", "LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in")
OPTIONAL_TOP = ("Makefile", "CHANGELOG.md")
DEBRIS_SUFFIXES = (".so", ".o", ".pyc", ".pyo", ".gcda", ".gcno")


def tracked_files(root):
    """Relative paths of the files that must be in the sdist."""
    try:
        out = subprocess.run(
            ["git", "-C", root, "ls-files", "-z", "--", *DIRS, *REQUIRED_TOP, *OPTIONAL_TOP],
            check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        ).stdout
        files = {p for p in out.decode().split("\0") if p}
        source = "git ls-files"
    except (OSError, subprocess.CalledProcessError):
        files = set()
        for d in DIRS:
            for dirpath, dirnames, filenames in os.walk(os.path.join(root, d)):
                dirnames[:] = [n for n in dirnames if not n.startswith(".") and n != "__pycache__"]
                for name in filenames:
                    if not name.endswith(DEBRIS_SUFFIXES):
                        files.add(os.path.relpath(os.path.join(dirpath, name), root))
        files.update(n for n in REQUIRED_TOP + OPTIONAL_TOP if os.path.isfile(os.path.join(root, n)))
        source = "the files on disk (no git)"
    # A tracked file deleted in the work tree is not expected in the sdist.
    files = {p for p in files if os.path.exists(os.path.join(root, p))}
    missing_top = [n for n in REQUIRED_TOP if n not in files]
    return files, source, missing_top


def sdist_files(path):
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    prefixes = {n.split("/", 1)[0] for n in names}
    if len(prefixes) != 1:
        sys.exit(f"check_sdist: {path}: expected one top-level directory, found {sorted(prefixes)}")
    return {n.split("/", 1)[1] for n in names if "/" in n}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist")
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = parser.parse_args(argv)

    needed, source, missing_top = tracked_files(args.root)
    have = sdist_files(args.sdist)
    problems = [f"not in the source tree: {n}" for n in missing_top]
    problems += [f"missing from the sdist: {p}" for p in sorted(needed - have)]
    problems += [f"build debris in the sdist: {p}" for p in sorted(have)
                 if p.endswith(DEBRIS_SUFFIXES) or "__pycache__/" in p]
    if "PKG-INFO" not in have:
        problems.append("missing from the sdist: PKG-INFO")
    name = os.path.basename(args.sdist)
    if problems:
        for p in problems:
            print(f"check_sdist: {name}: {p}", file=sys.stderr)
        return 1
    print(f"check_sdist: {name}: complete ({len(needed)} needed files from {source}, {len(have)} in the sdist)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
