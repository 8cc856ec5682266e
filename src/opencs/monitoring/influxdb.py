"""Writing points to an InfluxDB 1.x (the monitoring add-on of spec §13) through the `influxdb`
client library, which turns them into line protocol (its escaping of tags and fields) and POSTs
them to /write.

The database is the seed's `telegraf`, its default retention policy named `default` when opencs
creates it, so the walkthrough's `kapacitor define ... -dbrp telegraf.default` finds the data
(InfluxDB 1.x names the policy `autogen` unless told). Credentials come from the add-on URL's user
part; they travel as HTTP Basic auth and appear in no message this module makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

DATABASE = "telegraf"
RETENTION_POLICY = "default"
DEFAULT_PORT = 8086


class InfluxError(Exception):
    """A write or query that did not succeed; the message names no credential."""


@dataclass(frozen=True)
class InfluxTarget:
    scheme: str  # http | https
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    database: str = DATABASE

    @property
    def url(self) -> str:
        """Where it is, without credentials (what logs and metrics show)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_addon_url(value: str) -> InfluxTarget:
    """The label's value, e.g. `http://influxdb:8086` (raises ValueError)."""
    u = urlsplit(value.strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError("not an http(s) URL with a host")
    port = u.port or DEFAULT_PORT  # ValueError on a bad port
    return InfluxTarget(u.scheme, u.hostname, port, unquote(u.username or ""), unquote(u.password or ""))


class InfluxWriter:
    """One InfluxDB; creates the database on first use. Not thread-safe (one writer thread)."""

    def __init__(self, target: InfluxTarget, timeout: float = 5.0) -> None:
        self.target = target
        # retries=1: one attempt (the library's 0 means "until it succeeds")
        self.client = InfluxDBClient(host=target.host, port=target.port, username=target.username or None,
                                     password=target.password or None, database=target.database,
                                     ssl=target.scheme == "https", verify_ssl=True, timeout=timeout, retries=1)
        self._ready = False

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except InfluxDBClientError as e:
            raise InfluxError(f"{what} refused by {self.target.url}: HTTP {e.code} {str(e.content)[:200]}") from None
        except InfluxDBServerError as e:
            raise InfluxError(f"{what} failed at {self.target.url}: {str(e)[:200]}") from None
        except (requests.RequestException, OSError) as e:
            raise InfluxError(f"{what}: {self.target.url} unreachable ({type(e).__name__})") from None

    def ensure_database(self) -> None:
        names = {d["name"] for d in self._call("SHOW DATABASES", self.client.get_list_database)}
        if self.target.database not in names:
            q = f'CREATE DATABASE "{self.target.database}" WITH NAME "{RETENTION_POLICY}"'
            self._call("CREATE DATABASE", self.client.query, q, method="POST")
        self._ready = True

    def write(self, points: list[dict[str, Any]]) -> None:
        if not self._ready:
            self.ensure_database()
        try:
            self._call("write", self.client.write_points, points, time_precision="ms")
        except InfluxError:
            self._ready = False  # the database may have been dropped meanwhile: look again next time
            raise

    def close(self) -> None:
        self.client.close()
