"""Cheap grep-style checks over csrc/ for invariants of the house style
(msgspec's tests/unit/test_cpylint.py does the same):

* every file opens with a comment block naming itself ("/* name.c -- ...");
* in every function Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS pair up in
  order (never nested, never left open; Py_BLOCK/UNBLOCK_THREADS only inside);
* no PyModule_AddObject( (it steals a reference only on success) outside the
  3.9 compat shim in shmipc.h;
* PyArg_Parse* format strings end in ":name", so errors name the function;
* no PyErr_SetObject(PyExc_OSError, ...): on Python 3.9/3.10 it leaves the
  raised type OSError, which `except FileNotFoundError` misses; use
  shmipc_raise_oserror (errors.c), which raises errno's subclass.

The checkers are tested on bad snippets too, so they can fail.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
C_FILES = sorted(CSRC.glob("*.c"))
ALL_FILES = sorted(CSRC.glob("*.[ch]"))


def strip_c(text: str, keep_strings: bool = False) -> str:
    """Blank out comments (and string/char literals), keeping line breaks."""
    out: List[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(text[i:j] if keep_strings else c + " " * (j - i - 2) + c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(text: str) -> Iterator[Tuple[str, str]]:
    """(name, body) of each top-level function definition."""
    code = strip_c(text)
    depth, start, header_start = 0, 0, 0
    for i, c in enumerate(code):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                header = code[header_start:start]
                header_start = i + 1
                m = re.search(r"(\w+)\s*\([^()]*(?:\([^()]*\)[^()]*)*\)\s*$", header)
                if m and "=" not in header.split("\n")[-1]:
                    yield m.group(1), code[start : i + 1]
        elif c == ";" and depth == 0:
            header_start = i + 1


def thread_state_problems(body: str) -> List[str]:
    problems = []
    depth = 0
    for token in re.findall(r"\bPy_(?:BEGIN|END)_ALLOW_THREADS\b|\bPy_(?:UN)?BLOCK_THREADS\b", body):
        if token == "Py_BEGIN_ALLOW_THREADS":
            if depth:
                problems.append("Py_BEGIN_ALLOW_THREADS nested")
            depth += 1
        elif token == "Py_END_ALLOW_THREADS":
            if not depth:
                problems.append("Py_END_ALLOW_THREADS without BEGIN")
            else:
                depth -= 1
        elif not depth:
            problems.append(f"{token} outside BEGIN/END")
    if depth:
        problems.append("Py_BEGIN_ALLOW_THREADS never ended")
    return problems


def add_object_problems(name: str, text: str) -> List[str]:
    code = strip_c(text)
    if name == "shmipc.h":
        # the compat shim: PyModule_AddObjectRef for Python < 3.10
        code = re.sub(r"#if PY_VERSION_HEX < 0x030A0000.*?#endif", "", code, flags=re.S)
    return [f"line {code[: m.start()].count(chr(10)) + 1}" for m in re.finditer(r"\bPyModule_AddObject\s*\(", code)]


def format_problems(text: str) -> List[str]:
    code = strip_c(text, keep_strings=True)
    problems = []
    for m in re.finditer(r"\bPyArg_Parse(TupleAndKeywords|Tuple)\s*\(", code):
        rest = code[m.end() :]
        if m.group(1) == "Tuple" and re.match(r"\s*\w+\s*,\s*[A-Za-z_]\w*\s*,", rest):
            # The format is a parameter (a helper such as parse_semid): its
            # callers pass the literal, and are checked by the next test.
            continue
        literal = re.match(r'[^"]*?((?:"(?:[^"\\]|\\.)*"\s*)+)', rest, re.S)
        if literal is None:
            problems.append(f"line {code[: m.start()].count(chr(10)) + 1}: format is not a literal")
            continue
        fmt = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', literal.group(1)))
        if not re.search(r":\w+$", fmt):
            problems.append(f"line {code[: m.start()].count(chr(10)) + 1}: {fmt!r} does not end in ':name'")
    return problems


# ---- the checks over csrc/ --------------------------------------------------


def test_helper_formats_are_literals_naming_the_function():
    text = strip_c((CSRC / "semaphore.c").read_text(), keep_strings=True)
    for fmt in re.findall(r'parse_semid\(\s*\w+\s*,\s*"([^"]*)"', text):
        assert re.search(r":\w+$", fmt), fmt


def test_there_is_c_to_check():
    assert len(C_FILES) >= 3 and (CSRC / "shmipc.h").exists()


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_file_opens_with_a_comment_naming_it(path):
    text = path.read_text()
    assert text.startswith(f"/* {path.name} -- "), f"{path.name} must open with '/* {path.name} -- what it defines'"
    assert "*/" in text


@pytest.mark.parametrize("path", C_FILES, ids=lambda p: p.name)
def test_allow_threads_balanced_per_function(path):
    problems = [f"{name}(): {p}" for name, body in functions(path.read_text()) for p in thread_state_problems(body)]
    assert not problems


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_no_pymodule_addobject(path):
    assert not add_object_problems(path.name, path.read_text()), "use PyModule_AddObjectRef / PyModule_AddType"


@pytest.mark.parametrize("path", C_FILES, ids=lambda p: p.name)
def test_argument_formats_name_the_function(path):
    assert not format_problems(path.read_text())


def set_oserror_problems(text: str) -> List[str]:
    code = strip_c(text)
    return [
        f"line {code[: m.start()].count(chr(10)) + 1}"
        for m in re.finditer(r"\bPyErr_SetObject\s*\(\s*PyExc_OSError\b", code)
    ]


@pytest.mark.parametrize("path", C_FILES, ids=lambda p: p.name)
def test_oserror_raised_as_its_errno_subclass(path):
    assert not set_oserror_problems(path.read_text()), "use shmipc_raise_oserror(args)"


def test_set_oserror_checker_catches_mistakes():
    bad = "/* PyErr_SetObject(PyExc_OSError, a) */\nPyErr_SetObject( PyExc_OSError, args);\n"
    assert set_oserror_problems(bad) == ["line 2"]
    assert set_oserror_problems("PyErr_SetObject(PyExc_FileNotFoundError, args);") == []


# ---- the checkers themselves ---------------------------------------------------

BAD_THREADS = """
static int ok(void) { Py_BEGIN_ALLOW_THREADS x(); Py_END_ALLOW_THREADS return 0; }
static int
left_open(int a)
{
    if (a) { Py_BEGIN_ALLOW_THREADS y(); }
    return "}" == 0;  /* } */
}
static int nested(void) { Py_BEGIN_ALLOW_THREADS Py_BEGIN_ALLOW_THREADS Py_END_ALLOW_THREADS }
static int stray(void) { Py_END_ALLOW_THREADS Py_BLOCK_THREADS }
static PyMethodDef table[] = { {"x", NULL, 0, NULL} };
"""


def test_thread_checker_catches_mistakes():
    found = {name: thread_state_problems(body) for name, body in functions(BAD_THREADS)}
    assert found == {
        "ok": [],
        "left_open": ["Py_BEGIN_ALLOW_THREADS never ended"],
        "nested": ["Py_BEGIN_ALLOW_THREADS nested", "Py_BEGIN_ALLOW_THREADS never ended"],
        "stray": ["Py_END_ALLOW_THREADS without BEGIN", "Py_BLOCK_THREADS outside BEGIN/END"],
    }


def test_add_object_checker_catches_mistakes():
    bad = (
        "int f(PyObject *m) { /* PyModule_AddObject( in a comment is fine */\n"
        ' return PyModule_AddObject(m, "x", o); }'
    )
    assert add_object_problems("x.c", bad) == ["line 2"]
    shim = "#if PY_VERSION_HEX < 0x030A0000\nPyModule_AddObject(m, n, v)\n#endif\n"
    assert add_object_problems("shmipc.h", shim) == []
    assert add_object_problems("other.h", shim) == ["line 2"]


def test_format_checker_catches_mistakes():
    code = """
    PyArg_ParseTuple(args, "i:good", &x);
    PyArg_ParseTupleAndKeywords(args, kw, "i|$p"
                                ":split", kwlist, &x, &y);
    PyArg_ParseTuple(args, "O&i", conv, &x, &y);
    PyArg_ParseTupleAndKeywords(args, kw, "n|n:", kwlist, &x, &y);
    """
    problems = format_problems(code)
    assert len(problems) == 2
    assert "'O&i'" in problems[0] and "'n|n:'" in problems[1]
