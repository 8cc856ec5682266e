"""Form values to API bodies, and API errors back to the form field they name."""

from __future__ import annotations

import re

from opencs.console.calls import Reply

_FIELD = re.compile(r"^Field '([\w.]+)': ")
_LINE = re.compile(r"\(line (\d+), column (\d+)\)|line (\d+)")


def field_errors(reply: Reply) -> tuple[dict[str, str], str]:
    """({field: message}, message for the whole form) of a refused call: the API names the first
    field it refused as "Field 'name': ..." (opencs.api.body.validate)."""
    msg = reply.message
    m = _FIELD.match(msg)
    if m:
        return {m.group(1).split(".")[0]: msg[m.end():]}, ""
    return {}, f"{msg} ({reply.code})" if reply.code else msg


def error_line(message: str) -> int | None:
    """The 1-based line of a compose template an error names, if it names one."""
    m = _LINE.search(message)
    if not m:
        return None
    return int(m.group(1) or m.group(3))


def to_int(value: str | None) -> int | str | None:
    """A number field: an int when it is one, else the text as typed (the API names the mistake)."""
    if value is None or value.strip() == "":
        return None
    try:
        return int(value.strip())
    except ValueError:
        return value


_PATH = re.compile(r"\b(services(?:\.[\w.-]+)+|(?:networks|volumes|secrets|configs)(?:\.[\w.-]+)+)\b")


def template_line(template: str, message: str) -> int | None:
    """The 1-based line of `template` an API error is about: the line it names (YAML errors), or the
    line of the key path it names (schema errors: "services.web.portz: unsupported key")."""
    line = error_line(message)
    if line is not None:
        return line
    m = _PATH.search(message)
    if not m:
        return None
    import yaml

    try:
        node = yaml.compose(template)
    except yaml.YAMLError:
        return None
    found = None
    for key in m.group(1).split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        if match is None:
            break
        found, node = match[0].start_mark.line + 1, match[1]
    return found
