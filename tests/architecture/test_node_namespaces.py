"""Every real-node test and bench module claims its own node prefix and subnet.

Real-node modules name their netns, bridges and cgroups after a short prefix ("ocq" -> netns
`ocqn…`, bridge `ocq0`) on a subnet of their own, and tear down by that prefix. Two modules with
one prefix or subnet tear down each other's nodes when they run at the same time (two sessions, or
a bench beside the suite), so a claim made twice is a failure here, not a flaky test elsewhere.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIX = re.compile(r"""["'](oc[a-z])["']""")
SUBNET = re.compile(r"""["'](10\.2\d\d\.0\.0/24)["']""")


def claims(files: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """Each prefix or subnet literal -> the files that name it (one file may name it often)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for f in files:
        text = f.read_text(encoding="utf-8")
        for rx in (PREFIX, SUBNET):
            for m in rx.finditer(text):
                seen[m.group(1)].add(str(f.relative_to(root)))
    return seen


def shared(files: list[Path], root: Path = ROOT) -> dict[str, list[str]]:
    return {k: sorted(v) for k, v in claims(files, root).items() if len(v) > 1}


def test_no_two_modules_claim_one_prefix_or_subnet() -> None:
    files = sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")])
    files = [f for f in files if f.name != Path(__file__).name]
    assert shared(files) == {}, "pick a prefix and a subnet no other test or bench uses"


def test_the_check_finds_a_shared_claim(tmp_path: Path) -> None:
    # the finder must be able to fail: two files naming one prefix and one subnet
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text('PREFIX, SUBNET = "ocq", "10.250.0.0/24"\n', encoding="utf-8")
    b.write_text("node_runtime(d, prefix='ocq', subnet='10.250.0.0/24')\n", encoding="utf-8")
    assert set(shared([a, b], tmp_path)) == {"ocq", "10.250.0.0/24"}
