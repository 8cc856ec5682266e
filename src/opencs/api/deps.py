"""What the control-plane routes need of the process: the services, and nothing else.

The composition root's ControlPlane satisfies this protocol; `create_app` stores it on the app and
routes read it through `services(request)`.
"""

from __future__ import annotations

from typing import Protocol, cast

from starlette.requests import Request

from opencs.api.authorize import Authorizer
from opencs.auth.verifier import RequestVerifier
from opencs.config import Settings
from opencs.registry.service import RegistryService
from opencs.services.alerts import AlertRuleService
from opencs.services.attach_scripts import AttachScriptService
from opencs.services.audit import AuditService
from opencs.services.cluster_certs import ClusterCertService
from opencs.services.clusters import ClusterService
from opencs.services.events import EventLog
from opencs.services.instances import InstanceService
from opencs.services.login_profiles import LoginProfiles
from opencs.services.monitoring import MonitoringService
from opencs.services.registry_logins import RegistryLogins
from opencs.services.triggers import TriggerService
from opencs.services.usage import UsageService
from opencs.tasks.engine import TaskEngine


class ApiServices(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def verifier(self) -> RequestVerifier: ...

    @property
    def tasks(self) -> TaskEngine: ...

    @property
    def clusters(self) -> ClusterService: ...

    @property
    def instances(self) -> InstanceService: ...

    @property
    def triggers(self) -> TriggerService: ...

    @property
    def cluster_certs(self) -> ClusterCertService: ...

    @property
    def attach_scripts(self) -> AttachScriptService: ...

    @property
    def audit(self) -> AuditService: ...

    @property
    def registry(self) -> RegistryService: ...

    @property
    def authorizer(self) -> Authorizer: ...

    @property
    def registry_logins(self) -> RegistryLogins: ...

    @property
    def login_profiles(self) -> LoginProfiles: ...

    @property
    def alerts(self) -> AlertRuleService: ...

    @property
    def monitoring(self) -> MonitoringService: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def usage(self) -> UsageService | None:
        """The container/node usage collector (None when it is off)."""


def services(request: Request) -> ApiServices:
    return cast(ApiServices, request.app.state.services)
