"""The container images the pipeline runs in: one pinned reference per image kind.

`make images REGISTRY=... TAG=...` builds `images/<kind>.Dockerfile` and pushes it as
`<REGISTRY>/<kind>:<TAG>`; `image_ref` spells the same name, so the components run exactly what
was pushed. The references are fixed when this module is imported, that is when the pipeline is
compiled:

    RLHFOPS_REGISTRY=registry.example.com/ml RLHFOPS_IMAGE_TAG=2026.11.1 rlhfops compile

Without the variables the registry is `ghcr.io/rlhfops` and the tag is the package version, so a
compiled pipeline never points at a moving `latest`.

Every image runs as the numeric user `RUN_AS_USER` (the Dockerfiles' `USER`, a test keeps them
equal); `container_security` and `pod_security` are the restricted Pod Security settings of the
pods rlhfops defines (TrainJob nodes: both; the predictor: the container's; pipeline tasks: the
user, through kfp-kubernetes).
"""

from __future__ import annotations

import os
import re
from typing import Any

from rlhfops import __version__

KINDS = ("trainer", "runtime", "serving")
DEFAULT_REGISTRY = "ghcr.io/rlhfops"
REGISTRY_ENV = "RLHFOPS_REGISTRY"
TAG_ENV = "RLHFOPS_IMAGE_TAG"

RUN_AS_USER = 10001
"""UID and GID of the `rlhfops` user in every image; pods set it as runAsUser, runAsGroup and fsGroup."""

# Docker's tag grammar: a word character, then up to 127 of [\w.-].
_TAG = re.compile(r"[\w][\w.-]{0,127}")


def image_ref(kind: str, registry: str, tag: str) -> str:
    """`image_ref("trainer", "ghcr.io/rlhfops", "0.1.0")` -> `"ghcr.io/rlhfops/trainer:0.1.0"`."""
    if kind not in KINDS:
        raise ValueError(f"image kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if tag == "latest" or not _TAG.fullmatch(tag):
        raise ValueError(f"image tag {tag!r} must be a pinned Docker tag (not 'latest')")
    return f"{registry.rstrip('/')}/{kind}:{tag}"


REGISTRY = os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY
TAG = os.environ.get(TAG_ENV) or __version__

TRAINER_IMAGE = image_ref("trainer", REGISTRY, TAG)
"""CUDA, torch, DeepSpeed, trl and rlhfops[gpu]: reward models, PRM, PPO / GRPO / RLOO, offline RL."""
RUNTIME_IMAGE = image_ref("runtime", REGISTRY, TAG)
"""CPU torch and rlhfops: collect, annotate, version, evaluate, gate, deploy."""
SERVING_IMAGE = image_ref("serving", REGISTRY, TAG)
"""The runtime image running `rlhfops serve` (router + stable + canary)."""


def container_security() -> dict[str, Any]:
    """A container's securityContext under the `restricted` Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    """A pod's securityContext: the images' user, non-root, RuntimeDefault seccomp, and fsGroup
    `RUN_AS_USER`, so a workspace volume whose driver applies fsGroup is writable by the group."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
