"""Compose templates → Swarm stacks: ``load`` (YAML + interpolation), ``schema`` (JSON-schema
validation naming the offending path), ``normalize`` (the stack model the engine deploys)."""

from opencs.compose.load import ComposeError, ComposeFile, load
from opencs.compose.normalize import Options, StackModel, build_stack, normalize

__all__ = ["ComposeError", "ComposeFile", "Options", "StackModel", "build_stack", "load", "normalize"]
