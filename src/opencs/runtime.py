"""Transitional alias of the composition root (`opencs.composition`), removed once no module uses it."""

from opencs.composition import ControlPlane as Runtime
from opencs.composition import build as open_runtime
from opencs.composition import make_providers

__all__ = ["Runtime", "make_providers", "open_runtime"]
