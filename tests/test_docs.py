"""The docs' numbers point at files that exist: every `bench/results/...` path that README.md or docs/
names is in the tree, and each of those result files records the commit and the machine it measured
(in itself or in each of its parts, or for a folder of runs in its `run.json` or `times.json`). Files
of earlier measurements, named with "(commit C)", live in git history and are not checked here."""
import json
import re
from pathlib import Path

import pytest

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CITED = re.compile(r"bench/results/[A-Za-z0-9_./<>{},*-]*[A-Za-z0-9_>}*]")


def expand(pattern: str) -> list[str]:
    """`a/{x,y}.json` -> both names; `<seed>` -> a glob wildcard."""
    pattern = re.sub(r"<[^>]+>", "*", pattern)
    braces = re.search(r"\{([^}]*)\}", pattern)
    if not braces:
        return [pattern]
    return [name for part in braces.group(1).split(",")
            for name in expand(pattern[:braces.start()] + part + pattern[braces.end():])]


def cited() -> list[tuple[str, str]]:
    return sorted({(doc.name, m.group(0)) for doc in DOCS for m in CITED.finditer(doc.read_text())
                   if m.group(0) != "bench/results/<file>"})  # the docs' own placeholder for `git show`


def records(path: Path) -> bool:
    """The file names its commit and machine, or is made of parts (earlier files merged) that each do."""
    data = json.loads(path.read_text())
    has = lambda d: isinstance(d, dict) and "commit" in d and "machine" in d
    return has(data) or (isinstance(data, dict) and bool(data.get("parts")) and all(map(has, data["parts"])))


@pytest.mark.parametrize("doc,citation", cited())
def test_every_cited_result_file_exists_and_records_its_commit_and_machine(doc, citation):
    for pattern in expand(citation):
        found = sorted(REPO.glob(pattern.rstrip("/"))) if "*" in pattern else [REPO / pattern.rstrip("/")]
        assert found and all(p.exists() for p in found), f"{doc} cites {citation}, which is not in the tree"
        for path in found:
            files = sorted(path.glob("*.json")) if path.is_dir() else [path]
            for f in files:
                folder = [f.parent / n for n in ("run.json", "times.json") if (f.parent / n).is_file()]
                if f.name == "summary.json":  # made from the folder's files: those must record it
                    sources = [g for g in f.parent.glob("*.json") if g.name != "summary.json"]
                    assert any(records(g) for g in sources + folder), f"{f}: no source records commit and machine"
                    continue
                assert records(f) or any(records(g) for g in folder), \
                    f"{doc} cites {f.relative_to(REPO)}, which records no commit and machine (nor does its folder)"


def test_the_citation_pattern_sees_the_forms_the_docs_use():
    text = ("see `bench/results/cmu_cpu/{ddim,np}.json` and bench/results/np_length_cpu/cpu_s<seed>_x.json, "
            "or `bench/results/a/`")
    assert [m.group(0) for m in CITED.finditer(text)] == [
        "bench/results/cmu_cpu/{ddim,np}.json", "bench/results/np_length_cpu/cpu_s<seed>_x.json", "bench/results/a"]
    assert expand("bench/results/c/{a,b}.json") == ["bench/results/c/a.json", "bench/results/c/b.json"]
    assert expand("bench/results/n/cpu_s<seed>_o.json") == ["bench/results/n/cpu_s*_o.json"]
