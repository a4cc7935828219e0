"""The project's corpus (public/corpus/corpus-v1.txt): the dashboards'
top-activating contexts come from it, so it must stay what its README
says: one document per line, varied, small, no blanks or repeats."""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "..", "public", "corpus", "corpus-v1.txt")
README = os.path.join(HERE, "..", "..", "public", "corpus", "README.md")


def lines():
    with open(CORPUS, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")  # raises on invalid UTF-8
    assert text.endswith("\n") and "\r" not in text
    return raw, text[:-1].split("\n")


def test_one_short_document_per_line_without_blanks_or_repeats():
    raw, ls = lines()
    assert all(l.strip() == l and l for l in ls), "blank or padded lines"
    assert len(set(ls)) == len(ls), "duplicate lines"
    assert all(40 <= len(l) <= 700 for l in ls)
    assert 100_000 <= len(raw) <= 2_000_000, "a few MB at most"


def test_readme_states_the_measured_size():
    raw, ls = lines()
    readme = open(README, encoding="utf-8").read()
    m = re.search(r"\*\*([\d,]+) bytes, (\d+) lines\*\*", readme)
    assert m, "README gives the size"
    assert int(m.group(1).replace(",", "")) == len(raw) and int(m.group(2)) == len(ls)


def test_varied_scripts_code_and_numbers():
    _, ls = lines()
    text = "\n".join(ls)
    scripts = {
        "Cyrillic": r"[\u0400-\u04FF]", "Han": r"[\u4E00-\u9FFF]", "Hiragana": r"[\u3040-\u309F]",
        "Hangul": r"[\uAC00-\uD7AF]", "Arabic": r"[\u0600-\u06FF]", "Devanagari": r"[\u0900-\u097F]",
        "Greek": r"[\u0370-\u03FF]",
    }
    for name, pat in scripts.items():
        assert len(re.findall(pat, text)) >= 20, f"little {name} text"
    code = r"[{}]|\(\)|</|::|->|==|\$ [a-z]|SELECT|\bdef |\bfn |#include|\bimport |\bconst |\blet "
    assert sum(1 for l in ls if re.search(code, l)) >= 60, "little code"
    assert sum(1 for l in ls if len(re.findall(r"\d", l)) >= 8) >= 60, "few number-heavy lines"
    assert sum(1 for l in ls if "User:" in l or "Assistant:" in l) >= 20, "few chat transcripts"
