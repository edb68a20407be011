"""``bloodcell serve``: run the web service and page with uvicorn."""

from __future__ import annotations

import os
from typing import Optional

import typer


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Bundled model name or a .safetensors/.onnx file; default: the bundled model."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (each loads the model; metrics are per worker)."),
    refer_below: float = typer.Option(0.6, "--refer-below", min=0.0, max=1.0, help="Refer cells whose confidence is below this probability."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest request body accepted (MB)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds a request may wait and run before a 504."),
    max_in_flight: int = typer.Option(1, "--max-in-flight", min=1, help="Inference jobs running at once per worker."),
    max_waiting: int = typer.Option(16, "--max-waiting", min=0, help="Jobs allowed to wait per worker; beyond that clients get 503."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads per inference (torch.set_num_threads)."),
) -> None:
    """Serve the HTTP API (/v1/classify, /v1/count, /docs, /metrics) and the web page at /.

    Set BLOODCELL_API_KEY in the environment to require a key on /v1/* and /metrics.
    """
    import uvicorn

    from bloodcell.service.app import create_app_from_env

    settings = {
        "BLOODCELL_MODEL": model or "",
        "BLOODCELL_REFER_BELOW": str(refer_below),
        "BLOODCELL_MAX_UPLOAD_BYTES": str(int(max_upload_mb * 1024 * 1024)),
        "BLOODCELL_TIMEOUT_S": str(timeout),
        "BLOODCELL_MAX_IN_FLIGHT": str(max_in_flight),
        "BLOODCELL_MAX_WAITING": str(max_waiting),
    }
    if threads:
        settings["BLOODCELL_TORCH_THREADS"] = str(threads)
    os.environ.update(settings)
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("BLOODCELL_API_KEY"):
        typer.echo("warning: serving beyond loopback without BLOODCELL_API_KEY; anyone who can connect may use it", err=True)
    # Build the app here first: a wrong --model or limit fails with one sentence, before any worker starts.
    app = create_app_from_env()
    uvicorn.run(
        app if workers == 1 else "bloodcell.service.app:create_app_from_env",
        factory=workers > 1,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
