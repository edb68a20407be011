"""The service's settings: one frozen object, resolved once by ``bloodcell serve`` and passed down.

Nothing in :mod:`bloodcell.service` reads the environment: the CLI resolves the settings from
its flags (and the user's ``BLOODCELL_API_KEY``) and hands a :class:`ServiceSettings` to
:func:`bloodcell.service.app.create_app`. Library users build one directly::

    from bloodcell.service.app import create_app
    from bloodcell.service.settings import Limits, ServiceSettings

    app = create_app(ServiceSettings(model="pbc8", limits=Limits(timeout_s=30)))
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from bloodcell.errors import ConfigError
from bloodcell.inference.predictor import DEFAULT_REFER_BELOW, ENGINES
from bloodcell.service.origins import LOCAL_HOSTS, check_origin_settings

#: Limits that may be 0 (all others must be positive).
_MAY_BE_ZERO = ("max_waiting",)


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one request (and the server as a whole) may cause.

    Bytes: ``max_upload_bytes`` per request body. Pixels, read from the image headers before
    anything is decoded: ``max_pixels`` per image and ``max_request_pixels`` summed over the
    files of one request. ``max_files`` per request. Time: ``body_timeout_s`` for the whole
    body to arrive (slow or stalled uploads get 408), ``timeout_s`` for a request to wait for
    and run its job (504). Concurrency: ``max_in_flight`` jobs run at once, ``max_waiting``
    wait; more get 503 with ``Retry-After: retry_after_s``. Memory: ``max_decoding_bytes`` per image,
    estimated from its header as pixels times the bytes per pixel its decoding needs (16-bit images
    cost several times 8-bit ones); ``max_review_boxes`` boxes, corrections and missing cells in one
    ``/v1/review`` request; ``max_response_bytes`` per answer (413 beyond).
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_request_pixels: int = 64_000_000
    max_files: int = 32
    body_timeout_s: float = 30.0
    timeout_s: float = 60.0
    max_in_flight: int = 1
    max_waiting: int = 16
    retry_after_s: int = 2
    max_decoding_bytes: int = 320 * 1024 * 1024
    max_review_boxes: int = 20_000
    max_response_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"service limit {spec.name} must be a number, got {value!r}")
            if value < 0 or (value == 0 and spec.name not in _MAY_BE_ZERO):
                raise ConfigError(f"service limit {spec.name} must be positive, got {value}")


@dataclass(frozen=True)
class ServiceSettings:
    """Everything a service instance is built from.

    ``model`` is a bundled model name (pbc8, pbc8-int8, pbc11) or a .safetensors/.onnx path (None: the
    bundled default); ``engine`` and ``threads`` go to :func:`bloodcell.inference.predictor.load`
    (``threads`` is the number of concurrent onnxruntime batches; torch's own thread count is
    set by the process owner, ``bloodcell serve --threads``). ``refer_below`` applies to
    ``/v1/classify`` and to the white cells typed by ``/v1/count``. ``detector`` is the smear detector of
    ``/v1/count`` (``learned``, ``classical`` or a detector checkpoint, e.g. one written by ``bloodcell detector
    adapt``). ``api_key``, when set,
    protects ``/v1/*`` and ``/metrics``. ``allowed_hosts``: the Host header values (no port; ``*.lab.org``
    matches sub-domains, ``*`` anything) a request may carry; ``bloodcell serve`` adds the bound address.
    ``cors_origins``: other origins (``https://lims.lab.org``) whose pages may call the API; none by
    default, so only pages the service serves itself may send it a POST.
    ``store`` (an SQLite file or a postgresql:// URL) adds the sample store's endpoints (``/v1/session``,
    ``/v1/samples``), which check their own callers. ``models_dir``: where a supervisor's button writes the
    classifier adapted from the lab's cell bank (None: the button is refused, saying so).
    """

    model: str | None = None
    engine: str = "torch"
    threads: int | None = None
    refer_below: float = DEFAULT_REFER_BELOW
    detector: str = "learned"
    api_key: str | None = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits)
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS
    cors_origins: tuple[str, ...] = ()
    store: str | None = None
    models_dir: str | None = None

    def __post_init__(self) -> None:
        check_origin_settings(self.allowed_hosts, self.cors_origins)
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if not 0.0 <= self.refer_below <= 1.0:
            raise ConfigError(f"refer_below must be a probability between 0 and 1, got {self.refer_below}")
        if self.api_key is not None and not self.api_key:
            object.__setattr__(self, "api_key", None)  # an empty key means no key
        if not isinstance(self.limits, Limits):
            raise ConfigError(f"limits must be a Limits object, got {type(self.limits).__name__}")
