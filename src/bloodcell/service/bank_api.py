"""A lab's cell bank over HTTP, and a supervisor's button that adapts the lab's classifier from it.

``GET /v1/lab/adaptation?lab=NAME`` (anyone signed in, or the API key) answers the lab's bank (reviewed cells per
type and how many more of each are needed), whether it is large enough to adapt from (else the sentence saying
what is missing) and the lab's latest adapting job. ``POST /v1/lab/adaptation`` (a supervisor or an admin, with
the session's CSRF token) starts adapting the service's classifier from the bank as a background job: 202 with
the job, 422 with the sentence when the bank is too small, 409 while the lab's previous job runs (one per lab
at a time), 503 when the server has no models folder. The job writes the adapted model to the models folder
(``serve --models-dir``), each sample used keeps an ``adapt_classifier`` entry in its audit trail, and its
status (running, done with the figures, failed with the sentence) is what the page polls. Jobs are kept in
the process: a restarted server has none running (the models written and the audit trail stay).

The adapting itself is the workflow's (above the service): ``bloodcell serve`` hands it down as a
:class:`BankAdapter`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bloodcell.errors import BloodcellError
from bloodcell.log import get_logger
from bloodcell.service.limits import RequestRejected
from bloodcell.service.samples_api import http_errors, signed_in_caller
from bloodcell.store.cell_bank import bank_summary
from bloodcell.store.database import Store
from bloodcell.store.users import Person
from bloodcell.writing import output_name

logger = get_logger(__name__)


@dataclass(frozen=True)
class BankAdapter:
    """How a lab's classifier is adapted from its cell bank (:mod:`bloodcell.workflows.bank_adapt`):
    ``too_few(counts, lab)`` is the sentence saying what is missing (None: enough); ``adapt(store, model, output,
    lab=, actor=)`` writes the adapted model, audits its use, and returns the workflow's Adaptation."""

    too_few: Callable[[dict[str, int], str], str | None]
    adapt: Callable[..., Any]


@dataclass
class Job:
    """One adapting job of a lab: who started it and when, its state, and its figures or its sentence."""

    lab: str
    by: str
    started_at: str
    state: Literal["running", "done", "failed"] = "running"
    finished_at: str | None = None
    model: str | None = None
    message: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)


class AdaptationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lab: str = Field(max_length=200,
                     description="The lab whose cell bank is used (\"\": the samples kept without a lab name).")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _figures(result: Any) -> dict[str, Any]:
    fit = result.fit
    return {"cells": result.cells, "cv_accuracy": fit.cv_accuracy, "cv_accuracy_before": fit.cv_accuracy_before,
            "folds": fit.folds, "few": result.few, "without_cells": result.without_cells,
            "skipped": len(result.skipped)}


class AdaptJobs:
    """The lab's adapting jobs in this process: at most one running per lab."""

    def __init__(self, store: Store, adapter: BankAdapter, model: str, folder: Path | None):
        self.store, self.adapter, self.model, self.folder = store, adapter, model, folder
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def latest(self, lab: str) -> Job | None:
        with self._lock:
            return self._jobs.get(lab)

    def start(self, lab: str, person: Person, counts: dict[str, int]) -> Job:
        """Start adapting from ``lab``'s bank (``counts``: its cells per type) in a background thread."""
        person.require("adapt")
        if self.folder is None:
            raise RequestRejected(503, "no_models_folder", "this server has no models folder to write an adapted "
                                  "model to: start it with --models-dir FOLDER")
        if Path(self.model).suffix == ".onnx":
            raise RequestRejected(422, "invalid_request", f"this server runs the ONNX model {Path(self.model).name}: "
                                  "adapt its .safetensors checkpoint with `bloodcell adapt --store`")
        sentence = self.adapter.too_few(counts, lab)
        if sentence:
            raise RequestRejected(422, "too_few_cells", sentence)
        with self._lock:
            running = self._jobs.get(lab)
            if running is not None and running.state == "running":
                raise RequestRejected(409, "conflict", f"{running.by} started adapting this lab's classifier at "
                                      f"{running.started_at}: wait for that job to finish")
            job = self._jobs[lab] = Job(lab=lab, by=person.name, started_at=_now())
            output = self._output(lab)
            job.model = output.name
        threading.Thread(target=self._run, args=(job, output), name=f"bloodcell-adapt-{lab}"[:60], daemon=True).start()
        return job

    def _output(self, lab: str) -> Path:
        """A new file in the models folder: ``<lab>-adapted-<UTC time>.safetensors`` (never one that exists)."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", lab).strip("-.") or "lab"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        used = {p.name for p in self.folder.iterdir()} if self.folder.is_dir() else set()
        return self.folder / output_name(f"{stem}-adapted-{stamp}", ".safetensors", used)

    def _run(self, job: Job, output: Path) -> None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            result = self.adapter.adapt(self.store, self.model, output, lab=job.lab, actor=job.by)
            job.figures = _figures(result)
            job.message = (f"the adapted model is {output}; restart the service with --model on it to type this lab's "
                           "cells with it")
            job.state = "done"
        except (BloodcellError, OSError) as exc:
            job.message, job.state = str(exc), "failed"
        except Exception:  # noqa: BLE001 - the page gets one sentence, the log the details
            logger.exception("adapting the classifier of lab %r failed", job.lab)
            job.message, job.state = "adapting failed unexpectedly; see the server log", "failed"
        finally:
            job.finished_at = _now()


def add_bank_routes(app: FastAPI, store: Store, api_key: str | None, types: list[str], jobs: AdaptJobs | None) -> None:
    """Mount ``/v1/lab/adaptation`` on ``app`` (``types``: the classifier's white-cell types; ``jobs``: None when
    this server cannot adapt, e.g. a library user built it without the workflow)."""
    router = APIRouter(prefix="/v1", tags=["samples"])

    def bank_of(lab: str) -> dict[str, Any]:
        with http_errors(), store.session() as session:
            return bank_summary(session, lab, types)

    @router.get("/lab/adaptation")
    def adaptation(request: Request, lab: str = Query("", max_length=200)) -> dict[str, Any]:
        """The lab's bank, whether adapting from it can start (else why not) and its latest job."""
        signed_in_caller(store, api_key, request)
        lab = lab.strip()
        bank = bank_of(lab)
        job = jobs.latest(lab) if jobs is not None else None
        blocked = ("this server cannot adapt models" if jobs is None else
                   "this server has no models folder (serve --models-dir)" if jobs.folder is None else
                   jobs.adapter.too_few(bank["counts"], lab))
        return {**bank, "can_adapt": blocked is None, "why_not": blocked, "job": asdict(job) if job else None}

    @router.post("/lab/adaptation", status_code=202)
    def start(body: AdaptationRequest, request: Request) -> JSONResponse:
        """Start adapting the lab's classifier from its bank (a supervisor or an admin)."""
        person = signed_in_caller(store, api_key, request, change=True)
        if jobs is None:
            raise RequestRejected(503, "no_adapter", "this server cannot adapt models (it was built without the "
                                  "adapt workflow; `bloodcell serve` has it)")
        with http_errors():
            job = jobs.start(body.lab.strip(), person, bank_of(body.lab.strip())["counts"])
        return JSONResponse(asdict(job), status_code=202)

    app.include_router(router)
