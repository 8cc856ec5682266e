"""What the console needs of the process (the composition root's ControlPlane satisfies it)."""

from __future__ import annotations

from typing import Protocol

from opencs.api.authorize import Authorizer
from opencs.appapi.guard import CertIdentities
from opencs.config import Settings
from opencs.services.accounts import AccountService
from opencs.services.audit import AuditService
from opencs.services.console_sessions import ConsoleSessions
from opencs.services.failed_signins import FailedSignIns
from opencs.services.keys import KeyService
from opencs.services.login_profiles import LoginProfiles
from opencs.services.projects import ProjectService


class ConsoleServices(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def keys(self) -> KeyService: ...

    @property
    def accounts(self) -> AccountService: ...

    @property
    def authorizer(self) -> Authorizer: ...

    @property
    def projects(self) -> ProjectService: ...

    @property
    def cluster_certs(self) -> CertIdentities: ...

    @property
    def audit(self) -> AuditService: ...

    @property
    def login_profiles(self) -> LoginProfiles: ...

    @property
    def console_sessions(self) -> ConsoleSessions: ...

    @property
    def failed_signins(self) -> FailedSignIns: ...
