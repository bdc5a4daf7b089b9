"""Measured figures live in docs/performance.md, not in the code (issue 29, item 6).

A docstring or comment says in words why the code is as it is ("several times faster than json on a
large batch") and points to docs/performance.md for how much: a figure in the code goes stale with
the machine and the day, and nothing keeps it current. The code's own constants (a 16 KiB
threshold, a 60 s deadline) are not measurements and are not looked for.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What a measurement reads like: a duration in ms or us, a ratio (1.5x), "three times faster", "half
#: the time", "twice as long", "took 0.4 s", "0.6 KB each".
MEASURED = re.compile(
    r"\b\d[\d.,]*(?:-\d[\d.,]*)?\s?(?:ms|us|µs)\b"
    r"|\b\d+(?:\.\d+)?x\b"
    r"|\b(?:\d+|two|three|four|five|ten)\s+times\s+(?:faster|slower|as)\b"
    r"|\b(?:half|a third of|a quarter of)\s+the\s+(?:time|speed)\b|\btwice\s+as\s+(?:long|fast|slow)\b"
    r"|\btook\s+(?:about\s+)?\d"
    r"|\b\d[\d.]*\s?(?:KB|MB|GB)\s+each\b"
)


def sources() -> list[Path]:
    return sorted({*ROOT.glob("*/src/**/*.py"), *ROOT.glob("examples/*/src/**/*.py")})


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """The comments and docstrings of ``path``, each with the line it starts on."""
    source = path.read_text()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                yield (node.body[0].lineno, docstring)


def test_the_code_s_docstrings_and_comments_carry_no_measured_figure() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}"
        for path in sources()
        for line, text in prose(path)
        for match in MEASURED.finditer(text)
    ]
    assert not found, "figures to move to docs/performance.md:\n" + "\n".join(found)


def test_the_check_finds_a_figure_in_a_docstring_and_in_a_comment(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        'def parse() -> None:\n    """Parsed by orjson, three times faster (10 ms, not 34)."""\n\n\n'
        "LIMIT = 1 << 20  # a 64 MiB write took 0.4-1.0 s, 1.5x the pieces' time\n"
        "#: Records of about 0.6 KB each, read in half the time, hashed twice as fast.\n"
        "SIZE = 16 * 1024  # a constant: 16 KiB, 1 MiB, 60 s are no measurement\n"
    )
    found = [match.group(0) for _, text in prose(planted) for match in MEASURED.finditer(text)]
    expected = [
        "three times faster",
        "10 ms",
        "took 0",
        "1.5x",
        "0.6 KB each",
        "half the time",
        "twice as fast",
    ]
    assert sorted(found) == sorted(expected)
    assert len(sources()) > 100  # every distribution's code, not none
