"""``antidistill serve``: run the gateway."""

from __future__ import annotations

import logging

import typer

from antidistill.cli.common import ConfigOption, DatabaseOption, cli_errors, settings_from


@cli_errors
def serve(
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
    host: str | None = typer.Option(None, help="Listen address. [default: 127.0.0.1]"),
    port: int | None = typer.Option(None, help="Listen port. [default: 8080]"),
    backend: str | None = typer.Option(
        None,
        help="Model backend: local (embedded SmolLM2 teacher), openai (any OpenAI-compatible upstream), "
        "fake (tests). [default: local]",
    ),
    served_model: str | None = typer.Option(
        None, help="Model id clients ask for. [default: smollm2-135m-instruct]"
    ),
    upstream_url: str | None = typer.Option(
        None, help="Base URL of the upstream for --backend openai, e.g. http://127.0.0.1:8000/v1."
    ),
    model_path: str | None = typer.Option(
        None, help="Local backend: an HF model directory or .gguf file instead of the embedded teacher."
    ),
    max_batch_size: int | None = typer.Option(
        None, help="Local backend: sequences decoded together. [default: 8]"
    ),
    redis_url: str | None = typer.Option(None, help="redis://host:port/db for counters shared by replicas."),
    log_level: str | None = typer.Option(None, help="debug | info | warning | error. [default: info]"),
) -> None:
    """Start the OpenAI-compatible gateway in front of the configured model.

    Every option can also come from the --config TOML file or from ANTIDISTILL_* environment variables
    (nested with __, e.g. ANTIDISTILL_BACKEND__UPSTREAM__URL). The admin API is enabled by setting
    ANTIDISTILL_SERVER__ADMIN_TOKEN. SIGTERM/SIGINT stop gracefully and flush the event log.
    """
    import uvicorn

    from antidistill.gateway.app import create_app

    settings = settings_from(
        config,
        **{
            "database_url": database_url,
            "redis_url": redis_url,
            "server.host": host,
            "server.port": port,
            "server.log_level": log_level,
            "backend.kind": backend,
            "backend.served_model": served_model,
            "backend.upstream.url": upstream_url,
            "backend.local.model_path": model_path,
            "backend.local.max_batch_size": max_batch_size,
        },
    )
    logging.basicConfig(
        level=settings.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=settings.server.access_log,
        timeout_graceful_shutdown=30,
        lifespan="on",
    )
