"""Applications (spec §10) by concern: ``requests`` (bodies parsed at the edge), ``rules`` (the
ProjectService the edges call: ``core`` → ``views`` → ``service_rules`` → ``rules``), ``bluegreen``
(releases with both versions serving), ``tasks`` (the durable stages), ``volumes`` (cluster data
volumes), ``common`` (errors, collaborator protocols, helpers)."""

from opencs.services.projects.common import (
    RouteSync,
    ServiceUnavailable,
    TaskSubmitter,
    bump_version,
    parse_signal,
)
from opencs.services.projects.requests import MAX_SCALE
from opencs.services.projects.rules import ProjectService

__all__ = ["MAX_SCALE", "ProjectService", "RouteSync", "ServiceUnavailable", "TaskSubmitter", "bump_version",
           "parse_signal"]
