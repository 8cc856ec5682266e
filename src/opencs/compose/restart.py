"""The swarm restart policy of a compose service.

Unless the template bounds the restarts itself, a container failing MAX_RESTARTS + 1 times within
RESTART_WINDOW is not restarted again: a crash loop ends as a failed service whose last container
(and its logs) the swarm keeps. Without any policy, a command that exits 0 is done (on-failure):
one-shot services complete instead of being restarted forever, crashing ones are restarted.
"""

from __future__ import annotations

from typing import Any

from opencs.compose import values as V

MAX_RESTARTS = 2
RESTART_WINDOW_NS = 120 * 10**9


def restart_policy(d: dict[str, Any], deploy: dict[str, Any]) -> dict[str, Any]:
    """From `deploy.restart_policy` (v3) or `restart` (v1/v2): the Engine API RestartPolicy."""
    rp = deploy.get("restart_policy")
    if rp:
        out: dict[str, Any] = {"Condition": rp.get("condition", "any")}
        if rp.get("delay"):
            out["Delay"] = V.parse_duration(rp["delay"])
        if rp.get("max_attempts") is not None:
            out["MaxAttempts"] = int(rp["max_attempts"])
        if rp.get("window"):
            out["Window"] = V.parse_duration(rp["window"])
        return bounded(out)
    r = d.get("restart")
    if r is None:
        return bounded({"Condition": "on-failure"})
    if r in ("no", ""):  # compose reads an empty restart as its default, "no"
        return {"Condition": "none"}
    if r.startswith("on-failure"):
        _, _, n = r.partition(":")
        return bounded({"Condition": "on-failure", **({"MaxAttempts": int(n)} if n else {})})
    return bounded({"Condition": "any"})


def bounded(policy: dict[str, Any]) -> dict[str, Any]:
    if policy["Condition"] == "none" or "MaxAttempts" in policy:
        return policy  # the template said how many (0: unbounded, as swarm reads it)
    return {**policy, "MaxAttempts": MAX_RESTARTS, "Window": policy.get("Window", RESTART_WINDOW_NS)}
