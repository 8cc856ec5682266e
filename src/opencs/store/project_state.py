"""What a project row keeps beside its template (spec §10): per-service scale overrides, stopped
services, pinned image digests, the last error, what an update can roll back to, and the
blue-green release in progress (or how the last one ended). Stored as one JSON column
(``projects.state``), typed end to end: the column type turns it into ProjectState and back.

The models are immutable: a change is ``state.model_copy(update={...})`` written back whole.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ImagePin(_Model):
    """The digest a service's tag resolved to at its last deploy (the image it runs)."""

    image: str
    ref: str


class Weights(_Model):
    """What the user asked for: percent of the requests to the old and the new version."""

    old: int = 50
    new: int = 50


class Slots(_Model):
    """What the router applies now: the split between the old ("blue") and new ("green") services."""

    blue: int = 100
    green: int = 0


class BlueGreenRelease(_Model):
    """A blue-green release in progress (spec §10.13): deploying → serving → confirming | rolling_back."""

    state: str
    old_version: str
    new_version: str
    weights: Weights = Weights()
    slots: Slots = Slots()
    template: str = ""
    environment: dict[str, str] = Field(default_factory=dict)
    latest_image: bool = False
    description: str = ""
    health_timeout: int = 120
    started: str = ""
    warnings: list[str] = Field(default_factory=list)
    images: dict[str, ImagePin] = Field(default_factory=dict)
    message: str | None = None


class BlueGreenOutcome(_Model):
    """How the last blue-green release ended (confirmed | rolled_back) and why."""

    state: str
    old_version: str | None = None
    new_version: str | None = None
    weights: Weights | None = None
    started: str | None = None
    finished: str | None = None
    message: str | None = None


class ProjectState(_Model):
    scale: dict[str, int] = Field(default_factory=dict)  # service → replicas (overrides the template)
    stopped: list[str] = Field(default_factory=list)  # services stopped on request
    images: dict[str, ImagePin] = Field(default_factory=dict)  # service → pinned image
    warnings: list[str] = Field(default_factory=list)  # what the template normalizer reported
    last_error: str | None = None
    update_method: str | None = None  # rolling | blue-green (the last update)
    # what a failed rolling update goes back to (with Project.previous_version/_template)
    previous_environment: dict[str, str] | None = None
    previous_images: dict[str, ImagePin] = Field(default_factory=dict)
    previous_latest_image: bool = False
    blue_green: BlueGreenRelease | None = None
    blue_green_last: BlueGreenOutcome | None = None

    def changed(self, **values: Any) -> ProjectState:
        """A copy with `values` replaced (validated like a stored value)."""
        return ProjectState.model_validate({**self.model_dump(), **values})


class ProjectStateType(TypeDecorator[ProjectState]):
    """A JSON column holding a ProjectState."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: ProjectState | dict[str, Any] | None, dialect: Dialect) -> Any:
        if value is None:
            return ProjectState().model_dump(mode="json", exclude_defaults=True)
        if isinstance(value, dict):
            value = ProjectState.model_validate(value)
        return value.model_dump(mode="json", exclude_defaults=True)

    def process_result_value(self, value: Any, dialect: Dialect) -> ProjectState:
        return ProjectState.model_validate(value or {})
