"""FakeProvider: machines that exist only in memory, for unit tests of the cluster rules."""

from __future__ import annotations

import builtins
import threading

from opencs import ids
from opencs.providers.base import (
    Instance,
    InstanceNotFound,
    InstanceSpec,
    InstanceState,
    Provider,
    ProviderUnavailable,
)


class FakeProvider(Provider):
    name = "local"

    def __init__(self, subnet_prefix: str = "10.99.0.") -> None:
        self.instances: dict[str, Instance] = {}
        self.specs: dict[str, InstanceSpec] = {}
        self.fail_creates = 0  # the next N creates fail (fault injection)
        self.unavailable: str | None = None
        self._prefix = subnet_prefix
        self._lock = threading.Lock()
        self._next_ip = 10

    def check(self) -> None:
        if self.unavailable:
            raise ProviderUnavailable(self.unavailable)

    def create(self, spec: InstanceSpec) -> Instance:
        with self._lock:
            if self.fail_creates > 0:
                self.fail_creates -= 1
                raise RuntimeError("fake provider: create failed (injected)")
            iid = spec.instance_id or ids.instance_id()
            ip = f"{self._prefix}{self._next_ip}"
            self._next_ip += 1
        tls = spec.tls or (spec.tls_factory(ip) if spec.tls_factory else None)
        inst = Instance(iid, self.name, ip, InstanceState.RUNNING, docker_host=f"fake://{iid}",
                        tls_port=2376 if tls else None, hostname=iid,
                        details={"tls": bool(tls), "labels": dict(spec.labels)})
        self.instances[iid], self.specs[iid] = inst, spec
        return inst

    def _get(self, instance_id: str) -> Instance:
        try:
            return self.instances[instance_id]
        except KeyError:
            raise InstanceNotFound(instance_id) from None

    def start(self, instance_id: str) -> Instance:
        self._get(instance_id).state = InstanceState.RUNNING
        return self._get(instance_id)

    def stop(self, instance_id: str) -> Instance:
        self._get(instance_id).state = InstanceState.STOPPED
        return self._get(instance_id)

    def reset(self, instance_id: str, spec: InstanceSpec) -> Instance:
        old = self._get(instance_id)
        del self.instances[instance_id]
        inst = self.create(InstanceSpec(**{**spec.__dict__, "instance_id": instance_id}))
        inst.private_ip = old.private_ip  # re-imaging keeps the machine's address
        return inst

    def destroy(self, instance_id: str) -> None:
        self.instances.pop(instance_id, None)
        self.specs.pop(instance_id, None)

    def inspect(self, instance_id: str) -> Instance:
        return self._get(instance_id)

    def list(self) -> builtins.list[Instance]:
        return list(self.instances.values())
