"""``bloodcell serve``: run the web service and page with uvicorn, in one process.

The settings are resolved here, once, from the flags (and ``BLOODCELL_API_KEY``) into a
:class:`~bloodcell.service.settings.ServiceSettings` handed to ``create_app``. There is no
multi-worker mode: concurrency comes from ``--max-in-flight`` inference jobs in the one process;
to scale out, run several instances (each on its own port, or host) behind a reverse proxy.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Optional

import typer

from bloodcell.cli.choices import Engine
from bloodcell.cli.options import EngineOption
from bloodcell.errors import ConfigError
from bloodcell.inference.defaults import DEFAULT_REFER_BELOW
from bloodcell.log import get_logger

logger = get_logger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Bind addresses meaning every interface: not a name a client uses.
WILDCARD = ("0.0.0.0", "::", "")


def check_port(host: str, port: int) -> None:
    """ConfigError (one sentence) when ``host:port`` cannot be listened on, checked before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use; stop what listens there "
                                  "or choose another port with --port") from None
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Bundled model name (pbc8, pbc8-int8, pbc11) or a .safetensors/.onnx file; default: the bundled model."),
    engine: EngineOption = Engine.torch,
    detector: str = typer.Option("learned", "--detector", help="Smear detector of /v1/count: learned (the bundled one), classical, or a detector checkpoint such as one written by 'bloodcell detector adapt'."),
    refer_below: float = typer.Option(DEFAULT_REFER_BELOW, "--refer-below", min=0.0, max=1.0, help="Refer cells (classified, and white cells typed on smears) whose confidence is below this probability."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="BLOODCELL_API_KEY", show_envvar=True, help="Require this key on /v1/* and /metrics. Prefer the environment variable: a command line is visible to other users."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest request body accepted (MB)."),
    max_files: int = typer.Option(32, "--max-files", min=1, help="Most files in one request."),
    max_megapixels: float = typer.Option(40.0, "--max-megapixels", min=0.001, help="Largest image accepted (million pixels, from its header)."),
    max_request_megapixels: float = typer.Option(64.0, "--max-request-megapixels", min=0.001, help="Most pixels one request may decode, summed over its images (million pixels)."),
    max_decoding_mb: float = typer.Option(320.0, "--max-decoding-mb", min=0.001, help="Most memory decoding one image may take (MB, from its header: pixels times bytes per pixel, so 16-bit images count more)."),
    max_review_boxes: int = typer.Option(20_000, "--max-review-boxes", min=1, help="Most boxes, corrections and missing cells in one /v1/review request."),
    max_response_mb: float = typer.Option(64.0, "--max-response-mb", min=0.001, help="Largest answer sent (MB); a larger one gets a 413 saying what to ask for instead."),
    body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.1, help="Seconds for a whole request body to arrive before a 408 (stops stalled and trickling uploads)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds a request may wait and run before a 504 (its job is then stopped after its current step)."),
    max_in_flight: int = typer.Option(1, "--max-in-flight", min=1, help="Inference jobs running at once (the service's concurrency; one process)."),
    max_waiting: int = typer.Option(16, "--max-waiting", min=0, help="Jobs allowed to wait; beyond that clients get 503 with Retry-After."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads per inference job (torch.set_num_threads; onnx: concurrent batches)."),
    allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host", help="A host name clients may use to reach the server (repeatable; *.lab.org for sub-domains, * for any); the bound address and localhost are always allowed."),
    cors_origin: Optional[list[str]] = typer.Option(None, "--cors-origin", help="Another site whose pages may call the API, e.g. https://lims.lab.org (repeatable; default: only the service's own page)."),
    store: Optional[str] = typer.Option(None, "--store", help="Serve this sample store too (an SQLite file or a postgresql:// URL): sign-in, /v1/samples, decisions, sign-off, exports. It must exist: its first admin makes it (bloodcell users add NAME --role admin --store STORE)."),
    models_dir: Optional[Path] = typer.Option(None, "--models-dir", help="With --store: the folder a supervisor's \"Adapt\" button writes the classifier adapted from the lab's cell bank to (without it the button says so)."),
) -> None:
    """Serve the HTTP API (/v1/classify, /v1/count, /docs, /metrics) and the web page at /.

    One process; concurrency comes from --max-in-flight jobs. To scale out, run several instances behind a reverse proxy (each loads the model and has its own /metrics).

    Set BLOODCELL_API_KEY to require a key on /v1/* and /metrics. Requests must name the bound address, localhost or an --allowed-host; POSTs from other sites' pages are refused unless given with --cors-origin.
    """
    check_port(host, port)
    if store:  # before the model loads; a mistyped --store is refused, never made a new, empty store
        from bloodcell.store.database import open_store

        open_store(store, create=False).close()
    import uvicorn

    from bloodcell.service.app import create_app
    from bloodcell.service.origins import LOCAL_HOSTS
    from bloodcell.service.settings import Limits, ServiceSettings

    limits = Limits(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=int(max_megapixels * 1_000_000),
        max_request_pixels=int(max_request_megapixels * 1_000_000),
        max_files=max_files,
        body_timeout_s=body_timeout,
        timeout_s=timeout,
        max_in_flight=max_in_flight,
        max_waiting=max_waiting,
        max_decoding_bytes=int(max_decoding_mb * 1024 * 1024),
        max_review_boxes=max_review_boxes,
        max_response_bytes=int(max_response_mb * 1024 * 1024),
    )
    options = {"refer_below": refer_below, "detector": detector}
    hosts = tuple(dict.fromkeys([*LOCAL_HOSTS, *([host] if host not in WILDCARD else []), *(allowed_host or [])]))
    settings = ServiceSettings(model=model, engine=engine.value, threads=threads, api_key=api_key or None, limits=limits,
                               allowed_hosts=hosts, cors_origins=tuple(cors_origin or ()), store=store,
                               models_dir=str(models_dir) if models_dir else None, **options)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if host not in LOOPBACK and settings.api_key is None:
        logger.warning("serving beyond loopback without BLOODCELL_API_KEY; anyone who can connect may use it")
    if host in WILDCARD and not allowed_host:
        logger.warning("listening on all interfaces: other machines must reach it by a name given with --allowed-host")
    # Built before uvicorn starts: a wrong --model or limit fails with one sentence.
    app = create_app(settings, **({"bank_adapter": _bank_adapter()} if store else {}))
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info", timeout_graceful_shutdown=10)


def _bank_adapter():
    """The adapt workflow the service's supervisor button runs (the service sits below the workflows)."""
    from bloodcell.service.bank_api import BankAdapter
    from bloodcell.workflows.bank_adapt import adapt_from_bank, too_few

    return BankAdapter(too_few=too_few, adapt=adapt_from_bank)
