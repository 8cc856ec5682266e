"""Host claims of data dirs (opencs.providers.hostclaims): allocation, reuse, collisions, release.

The host is a fake view here (links, networks, listeners); the index is a tmp dir of its own.
tests/providers/test_two_servers.py runs two real servers side by side."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from opencs.providers import hostclaims as hc


@pytest.fixture(autouse=True)
def _index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCS_HOST_CLAIMS_DIR", str(tmp_path / "index"))
    monkeypatch.setattr(hc, "INDEX_LOCK", tmp_path / "index.lock")


def view(links: set[str] | None = None, nets: tuple[str, ...] = (), listening: set[tuple[str, int]] | None = None,
         prefixes: set[str] | None = None) -> hc.HostView:
    used = prefixes or set()
    return hc.HostView(links or set(), [ipaddress.ip_network(n) for n in nets], listening or set(),
                       lambda prefix, bridge: prefix in used)


POOL = hc.Pool(prefix="ozz", subnets="10.201.0.0/22")


def live(d: Path) -> hc.DataDirUse:
    d.mkdir(parents=True, exist_ok=True)
    return hc.DataDirUse(d)


def test_first_data_dir_gets_slot_zero_and_keeps_it(tmp_path: Path) -> None:
    a = hc.claim(tmp_path / "a", hc.Wanted(), POOL, lambda: view())
    assert (a.prefix, a.bridge, a.subnet, a.registry_port) == ("ozz", "ozz0", "10.201.0.0/24", 5000)
    assert (a.appapi_ports, a.routing_ports) == ((17000, 17099), (18000, 18099))
    assert hc.recorded(tmp_path / "a") == a
    # a restart reuses the record without looking at the host (its own bridge exists by then)
    assert hc.claim(tmp_path / "a", hc.Wanted(), POOL, lambda: pytest.fail("host read")) == a


def test_second_data_dir_avoids_the_first_and_the_host(tmp_path: Path) -> None:
    use = live(tmp_path / "a")
    a = hc.claim(tmp_path / "a", hc.Wanted(), POOL, lambda: view())
    host = view(nets=("10.201.1.128/25",), listening={("127.0.0.1", 17150), ("0.0.0.0", 5001)})
    b = hc.claim(tmp_path / "b", hc.Wanted(), POOL, lambda: host)
    assert not b.conflicts(a)
    # slot 1's subnet is routed on the host already, so slot 2; the 171xx block has a listener
    assert (b.prefix, b.bridge, b.subnet) == ("ozz2", "ozz20", "10.201.2.0/24")
    assert (b.appapi_ports, b.routing_ports) == ((17200, 17299), (18100, 18199))
    assert b.registry_port == 5002  # 5001 (the realm of 5000) is taken by a wildcard listener
    use.release()


def test_existing_names_on_the_host_are_skipped(tmp_path: Path) -> None:
    c = hc.claim(tmp_path / "c", hc.Wanted(), POOL, lambda: view(links={"ozz0"}, prefixes={"ozz1"}))
    assert c.prefix == "ozz2"


def test_explicit_settings_win_but_collide_clearly(tmp_path: Path) -> None:
    use = live(tmp_path / "a")
    a = hc.claim(tmp_path / "a", hc.Wanted(), POOL, lambda: view())
    # given values are not judged against the host: a subnet that is routed is still taken
    b = hc.claim(tmp_path / "b", hc.Wanted(subnet="10.202.0.0/24"), POOL, lambda: view(nets=("10.202.0.0/16",)))
    assert b.subnet == "10.202.0.0/24" and b.explicit == ("subnet",) and b.prefix != a.prefix
    with pytest.raises(hc.ClaimConflict, match=rf"collides with data dir {tmp_path / 'a'}.*subnet 10.201.0.0/16"):
        hc.claim(tmp_path / "c", hc.Wanted(subnet="10.201.0.0/16"), POOL, lambda: view())
    with pytest.raises(hc.ClaimConflict, match="node name prefix ozzn"):  # ozzn names look like ozz's
        hc.claim(tmp_path / "d", hc.Wanted(prefix="ozzn"), POOL, lambda: view())
    with pytest.raises(hc.ClaimConflict, match="appapi ports 17050-17060 overlap"):
        hc.claim(tmp_path / "e", hc.Wanted(appapi_ports=(17050, 17060)), POOL, lambda: view())
    assert not hc.recorded(tmp_path / "c") and not hc.recorded(tmp_path / "e")
    use.release()


def test_claims_without_presence_are_pruned_and_released(tmp_path: Path) -> None:
    a = hc.claim(tmp_path / "a", hc.Wanted(), POOL, lambda: view())
    # nothing of a is on the host (no nodes, no bridge, no process): its slot is free again
    b = hc.claim(tmp_path / "b", hc.Wanted(), POOL, lambda: view())
    assert (b.prefix, b.subnet) == (a.prefix, a.subnet)
    assert [p.name for p in (tmp_path / "index").iterdir()] == [hc._index_path((tmp_path / "b").resolve()).name]
    # a node state file makes a claim live even with no process running
    node = tmp_path / "b" / "nodes" / "i-0123456789abcdefghij"
    node.mkdir(parents=True)
    (node / "state.json").write_text("{}")
    c = hc.claim(tmp_path / "c", hc.Wanted(), POOL, lambda: view())
    assert c.prefix != b.prefix
    assert hc.release(tmp_path / "b") == b
    assert not hc.recorded(tmp_path / "b") and not hc._index_path((tmp_path / "b").resolve()).exists()


def test_a_recorded_claim_taken_meanwhile_is_reallocated_when_nothing_of_it_remains(tmp_path: Path) -> None:
    a = hc.claim(tmp_path / "a", hc.Wanted(), POOL, lambda: view())
    use = live(tmp_path / "b")
    b = hc.claim(tmp_path / "b", hc.Wanted(), POOL, lambda: view())  # a had no presence: b has its slot
    assert b.subnet == a.subnet
    again = hc.claim(tmp_path / "a", hc.Wanted(), POOL, lambda: view())
    assert not again.conflicts(b)
    use.release()


def test_last_user_of_a_data_dir(tmp_path: Path) -> None:
    one, two = live(tmp_path / "a"), live(tmp_path / "a")
    assert hc.in_use(tmp_path / "a")
    assert not one.release()  # another process (here: another lock) still holds it
    assert two.release() and not hc.in_use(tmp_path / "a")


def test_listening_sockets_parse_this_process_listener() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert ("127.0.0.1", port) in hc.listening_sockets()


def test_a_data_dir_with_nodes_from_before_records_keeps_the_old_defaults(tmp_path: Path) -> None:
    node = tmp_path / "old" / "nodes" / "i-0123456789abcdefghij"
    node.mkdir(parents=True)
    (node / "state.json").write_text("{}")
    # its own bridge exists on the host: that must not push it to another slot
    old = hc.claim(tmp_path / "old", hc.Wanted(), POOL, lambda: view(links={"ocs0"}))
    assert (old.bridge, old.subnet, old.prefix, old.appapi_ports) == ("ocs0", "10.213.0.0/24", "ocs", (17000, 17999))
    new = hc.claim(tmp_path / "new", hc.Wanted(), POOL, lambda: view())
    assert (new.appapi_ports, new.routing_ports) == ((20000, 20099), (24000, 24099))


def test_two_data_dirs_claiming_at_once_get_different_slots(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def start(name: str) -> hc.HostClaims:  # what composition.claim_host does
        use = live(tmp_path / name)
        uses.append(use)
        return hc.claim(tmp_path / name, hc.Wanted(), POOL, lambda: view())

    uses: list[hc.DataDirUse] = []
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(start, ["a", "b", "c", "d"]))
    assert all(not x.conflicts(y) for i, x in enumerate(got) for y in got[i + 1:])
    for u in uses:
        u.release()
