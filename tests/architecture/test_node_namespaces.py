"""Every real-node test and bench module claims its own node prefix and subnet.

Real-node modules name their netns, bridges and cgroups after a short prefix ("ocq" -> netns
`ocqn…`, bridge `ocq0`) on a subnet of their own, and tear down by that prefix. Two modules with
one prefix or subnet tear down each other's nodes when they run at the same time (two sessions, or
a bench beside the suite), so a claim made twice is a failure here, not a flaky test elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a claim is made on a line that names a prefix or subnet, or hands them to a node runtime
CLAIM_LINE = re.compile(r"prefix|subnet|node_runtime|node_env", re.IGNORECASE)
PREFIX = re.compile(r"""["'](o[a-z][a-z0-9]{1,2})["']""")
SUBNET = re.compile(r"""["'](10\.\d{1,3}\.\d{1,3}\.\d{1,3}/\d{1,2})["']""")


def claims(files: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """Each prefix or subnet literal -> the files that claim it (one file may name it often)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if CLAIM_LINE.search(line):
                for rx in (PREFIX, SUBNET):
                    for m in rx.finditer(line):
                        seen[m.group(1)].add(str(f.relative_to(root)))
    return seen


def shared(files: list[Path], root: Path = ROOT) -> dict[str, list[str]]:
    """Claims made by more than one file: the same prefix, or subnets that overlap."""
    seen = claims(files, root)
    out = {k: sorted(v) for k, v in seen.items() if len(v) > 1}
    nets = [(ipaddress.ip_network(k, strict=False), k, v) for k, v in seen.items() if "/" in k]
    for i, (a, ka, fa) in enumerate(nets):
        for b, kb, fb in nets[i + 1:]:
            if a.overlaps(b) and fa != fb:
                out[f"{ka} overlaps {kb}"] = sorted(fa | fb)
    return out


def test_no_two_modules_claim_one_prefix_or_subnet() -> None:
    files = sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")])
    files = [f for f in files if f.name != Path(__file__).name]
    assert shared(files) == {}, "pick a prefix and a subnet no other test or bench uses"


def test_the_check_finds_a_shared_claim(tmp_path: Path) -> None:
    # the finder must be able to fail: one prefix twice, one subnet inside another
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text('PREFIX, SUBNET = "oqz", "10.250.0.0/22"\n', encoding="utf-8")
    b.write_text("node_runtime(d, prefix='oqz', subnet='10.250.1.0/24')\n", encoding="utf-8")
    assert set(shared([a, b], tmp_path)) == {"oqz", "10.250.0.0/22 overlaps 10.250.1.0/24"}
