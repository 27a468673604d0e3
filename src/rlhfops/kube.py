"""The Kubernetes API, reached one way: the pod's service account inside a cluster, ~/.kube/config
(or $KUBECONFIG) outside one. Used by the KServe deploy steps (`rlhfops.serving.kserve.apply`), the
Kubeflow Trainer jobs (`rlhfops.trainer_job`) and the CLI; an API that cannot be reached or that
refuses a request is one `KubeError` sentence."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class KubeError(RuntimeError):
    """The Kubernetes API could not be reached or refused a request; the message is one sentence for a person."""


def custom_objects_api() -> Any:
    """A `kubernetes.client.CustomObjectsApi` with the in-cluster credentials, else the kubeconfig's."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, FileNotFoundError) as e:
            raise KubeError(f"cannot reach the Kubernetes API: no in-cluster or kubeconfig credentials ({e})") from None
    return client.CustomObjectsApi()


def not_found(read: Callable[[], Any]) -> bool:
    """Whether `read()`, an API get, answers 404 Not Found; any other refusal is raised."""
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Inside: an API refusal or a connection failure is raised as a `KubeError` naming `what`
    (e.g. "InferenceService rlhfops/rlhfops-policy")."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as e:
        raise KubeError(f"the Kubernetes API refused the request on {what}: {e.status} {e.reason}") from None
    except HTTPError as e:
        raise KubeError(f"cannot reach the Kubernetes API for {what}: {type(e).__name__}") from None
