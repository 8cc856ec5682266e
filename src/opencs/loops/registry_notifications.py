"""Where the bundled registry announces its pushes (image-update triggers): to one process.

Every process sharing the data dir may start or adopt the registry, but its notification URL names
one API; were each to write its own, they would restart the registry in turn, and a process without
an API (`opencs worker`) would point it where nothing serves. So the URL is a duty: the holder of
its lease makes the running registry notify it, and re-checks every `interval` (another process
may have started the registry meanwhile); the others adopt the registry wherever it notifies.
"""

from __future__ import annotations

from typing import Protocol

from opencs.loops.usage import UsageLoop


class NotificationOwner(Protocol):
    def take_notifications(self) -> None: ...

    def drop_notifications(self) -> None: ...

    def keep_notifications(self) -> None: ...


class _Keep:
    def __init__(self, owner: NotificationOwner) -> None:
        self.owner = owner

    def collect(self) -> None:
        self.owner.keep_notifications()


class RegistryNotificationsLoop(UsageLoop):
    def __init__(self, owner: NotificationOwner, interval: float = 5.0) -> None:
        super().__init__(_Keep(owner), interval, name="registry-notifications")
        self.owner = owner

    def start(self) -> None:
        self.owner.take_notifications()
        super().start()

    def stop(self) -> None:
        super().stop()
        self.owner.drop_notifications()
