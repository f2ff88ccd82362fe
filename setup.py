"""Build the shmipc._core extension.

Knobs from the environment (msgspec's setup.py does the same):
  SHMIPC_DEBUG=1     -O0 -g, assertions on
  SHMIPC_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
                     (run with LD_PRELOAD=$(gcc -print-file-name=libasan.so))
  SHMIPC_COVERAGE=1  gcov instrumentation
"""
import glob
import os
import sys

from setuptools import Extension, setup


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                      "-Wno-missing-field-initializers", "-D_GNU_SOURCE"]
extra_link_args = []
undef_macros = []

if flag("SHMIPC_DEBUG") or flag("SHMIPC_SANITIZE"):
    extra_compile_args += ["-O0", "-g3"]
    undef_macros.append("NDEBUG")
if flag("SHMIPC_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-fno-sanitize-recover=undefined"]
    extra_compile_args += san
    extra_link_args += san
if flag("SHMIPC_COVERAGE"):
    extra_compile_args += ["--coverage"]
    extra_link_args += ["--coverage"]
if flag("SHMIPC_WERROR"):
    extra_compile_args.append("-Werror")

libraries = ["pthread"] if sys.platform.startswith("linux") else []

setup(
    ext_modules=[
        Extension(
            "shmipc._core",
            sources=sorted(glob.glob("csrc/*.c")),
            depends=sorted(glob.glob("csrc/*.h")),
            include_dirs=["csrc"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            undef_macros=undef_macros,
            libraries=libraries,
        )
    ],
)
