"""Backend registry: name -> factory. Factories import lazily so that `fake` and `openai` never
load torch. Third parties can add backends through the ``antidistill.backends`` entry point group."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from antidistill.backends.base import Backend
from antidistill.errors import ConfigError
from antidistill.settings import BackendSettings

BackendFactory = Callable[[BackendSettings], Backend]


def _local(s: BackendSettings) -> Backend:
    from antidistill.backends.local import LocalBackend

    return LocalBackend(s.local, s.served_model)


def _upstream(s: BackendSettings) -> Backend:
    from antidistill.backends.upstream import UpstreamBackend

    if not s.upstream.url:
        raise ConfigError("backend 'openai' needs backend.upstream.url (ANTIDISTILL_BACKEND__UPSTREAM__URL)")
    return UpstreamBackend(s.upstream, s.served_model)


def _fake(s: BackendSettings) -> Backend:
    from antidistill.backends.fake import FakeBackend

    return FakeBackend(s.fake, s.served_model)


BACKENDS: dict[str, BackendFactory] = {"local": _local, "openai": _upstream, "fake": _fake}


def build_backend(settings: BackendSettings) -> Backend:
    factories = dict(BACKENDS)
    for ep in entry_points(group="antidistill.backends"):
        factories.setdefault(ep.name, ep.load())
    try:
        factory = factories[settings.kind]
    except KeyError:
        raise ConfigError(
            f"unknown backend {settings.kind!r}; choose one of: {', '.join(sorted(factories))}"
        ) from None
    return factory(settings)
