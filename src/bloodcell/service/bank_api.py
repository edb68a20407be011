"""A lab's cell bank over HTTP, a supervisor's button that adapts the lab's classifier from it, and the choice of
the classifier the lab's new counts are typed with.

``GET /v1/lab/adaptation?lab=NAME`` (anyone signed in, or the API key) answers the lab's bank (reviewed cells per
type and how many more of each are needed), whether it is large enough to adapt from (else the sentence saying
what is missing), the lab's latest adapting job and the classifier its new counts are typed with. ``POST
/v1/lab/adaptation`` (a supervisor or an admin, with the session's CSRF token) starts adapting the service's
classifier from the bank as a background job (``keep``: types the lab sees but whose bank holds fewer than 5 cells,
kept above the model's own mistakes of them, as ``bloodcell adapt --keep``): 202 with the job, 422 with the sentence
when the bank is too small or ``keep`` names a type the model lacks,
409 while the lab's previous job runs (one per lab at a time, across servers sharing the store), 503 when the
server has no models folder. The job writes the adapted model to the models folder (``serve --models-dir``), each
sample used keeps an ``adapt_classifier`` entry in its audit trail, and its status (running, done with the
figures, failed with the sentence) is kept in the store (:mod:`bloodcell.store.adapt_jobs`) and polled by the
page: a job whose server stopped is shown failed, "the service stopped while adapting". ``POST
/v1/lab/classifier`` (a supervisor or an admin, CSRF token) types the lab's new counts with a model one of its
finished jobs wrote, or again with the service's own (``model``: null); audited. ``GET /v1/lab/audit?lab=NAME``
(anyone signed in, or the API key) answers the lab's own audit trail: its jobs started, done or failed and the
classifiers chosen, oldest first (what each sample's cells were used for is in that sample's trail).

The adapting itself is the workflow's (above the service): ``bloodcell serve`` hands it down as a
:class:`BankAdapter`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bloodcell.errors import BloodcellError
from bloodcell.log import get_logger
from bloodcell.provenance import file_sha256
from bloodcell.service.lab_models import LabModels
from bloodcell.service.limits import RequestRejected
from bloodcell.service.samples_api import http_errors, signed_in_caller
from bloodcell.service.schemas import LabName, StoredLab
from bloodcell.smear.lab_name import lab_problem
from bloodcell.store.adapt_jobs import HEARTBEAT_S, STALE_S, beat, finish_job, job_state, latest_job, start_job
from bloodcell.store.audit import entry_dict, lab_trail
from bloodcell.store.cell_bank import bank_summary
from bloodcell.store.lab_classifiers import describe, lab_classifier
from bloodcell.store.database import Store
from bloodcell.store.users import Person
from bloodcell.weights import exported_from
from bloodcell.wording import shown
from bloodcell.writing import output_name

logger = get_logger(__name__)


@dataclass(frozen=True)
class BankAdapter:
    """How a lab's classifier is adapted from its cell bank (:mod:`bloodcell.workflows.bank_adapt`):
    ``too_few(counts, lab)`` is the sentence saying what is missing (None: enough); ``adapt(store, model, output,
    lab=, actor=)`` writes the adapted model, audits its use, and returns the workflow's Adaptation."""

    too_few: Callable[[dict[str, int], str], str | None]
    adapt: Callable[..., Any]


class AdaptationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lab: LabName = Field(description="The lab whose cell bank is used (\"\": the samples kept without a lab name).")
    keep: list[Annotated[str, StringConstraints(min_length=1, max_length=60)]] = Field(
        default_factory=list, max_length=20, description="White-cell types the lab sees but whose bank holds fewer "
        "than 5 cells: a cell the model calls so more confidently than any of the bank's cells of other types it "
        "mistook for it keeps that type (`bloodcell adapt --keep`).")


class ClassifierRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lab: LabName = Field(description="The lab whose new counts are typed (\"\": the service's counts).")
    model: str | None = Field(max_length=500, description="A model file one of the lab's finished adapting jobs "
                              "wrote; null: the service's own model.")


def _figures(result: Any) -> dict[str, Any]:
    fit = result.fit
    return {"cells": result.cells, "cv_accuracy": fit.cv_accuracy, "cv_accuracy_before": fit.cv_accuracy_before,
            "folds": fit.folds, "few": result.few, "without_cells": result.without_cells,
            "at_risk": result.at_risk, "kept": sorted(result.kept), "skipped": len(result.skipped)}


class AdaptJobs:
    """The labs' adapting jobs, kept in the store (:mod:`bloodcell.store.adapt_jobs`): one running per lab across
    processes; each runs in a thread of this process that renews its heartbeat."""

    def __init__(self, store: Store, adapter: BankAdapter, model: str, folder: Path | None,
                 heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
        self.store, self.adapter, self.model, self.folder = store, adapter, model, folder
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s

    def latest(self, lab: str) -> dict[str, Any] | None:
        with self.store.session() as session:
            job = latest_job(session, lab, self.stale_s)
            return job_state(job) if job is not None else None

    def refusal(self, lab: str, counts: dict[str, int]) -> RequestRejected | None:
        """Why adapting from ``lab``'s bank (``counts``: its cells per type) cannot start here (None: it can)."""
        if self.folder is None:
            return RequestRejected(503, "no_models_folder", "this server has no models folder to write an adapted "
                                   "model to: start it with --models-dir FOLDER")
        if lab_problem(lab):  # a name kept before the rule: its bank is shown, but no job names it anew
            return RequestRejected(422, "invalid_request", lab_problem(lab))
        if Path(self.model).suffix == ".onnx":
            source = exported_from(Path(self.model)) or "its .safetensors checkpoint"
            return RequestRejected(422, "invalid_request", f"this server runs the ONNX model {Path(self.model).name}: "
                                   f"adapt {source} with `bloodcell adapt --store`")
        sentence = self.adapter.too_few(counts, lab)
        return RequestRejected(422, "too_few_cells", sentence) if sentence else None

    def start(self, lab: str, person: Person, counts: dict[str, int], keep: list[str]) -> dict[str, Any]:
        """Start adapting from ``lab``'s bank (``counts``: its cells per type; ``keep``: the types to keep) in a
        background thread."""
        person.require("adapt")
        refused = self.refusal(lab, counts)
        if refused is not None:
            raise refused
        output = self._output(lab)
        try:
            job = start_job(self.store, lab, person, output.name, self.stale_s)
        except BaseException:
            output.unlink(missing_ok=True)
            raise
        done = threading.Event()
        threading.Thread(target=self._beat, args=(job.id, done), name=f"bloodcell-beat-{job.id}", daemon=True).start()
        threading.Thread(target=self._run, args=(job.id, lab, person.name, output, done, keep),
                         name=f"bloodcell-adapt-{lab}"[:60], daemon=True).start()
        return job_state(job)

    def _output(self, lab: str) -> Path:
        """A new file in the models folder, ``<lab>-adapted-<UTC time>.safetensors``, reserved (created empty) so that
        no other job, of a lab whose name reads alike or of another server, is given it too."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", lab).strip("-.") or "lab"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            used = {p.name for p in self.folder.iterdir()}
            while True:
                output = self.folder / output_name(f"{stem}-adapted-{stamp}", ".safetensors", used)
                try:
                    output.touch(exist_ok=False)
                    return output
                except FileExistsError:
                    used.add(output.name)
        except OSError as exc:
            raise RequestRejected(503, "no_models_folder", f"the models folder {self.folder} cannot be written to "
                                  f"({exc.strerror or exc})") from None

    def _beat(self, job_id: int, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_s):
            try:
                beat(self.store, job_id)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the job goes on
                logger.exception("renewing the heartbeat of adapting job %s failed", job_id)

    def _run(self, job_id: int, lab: str, actor: str, output: Path, done: threading.Event, keep: list[str]) -> None:
        ending: dict[str, Any] = {"message": "adapting was interrupted"}
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            result = self.adapter.adapt(self.store, self.model, output, lab=lab, actor=actor, keep=keep)
            ending = {"figures": _figures(result), "sha256": file_sha256(result.path),
                      "message": f"the adapted model is {output.name} in the models folder"}
        except (BloodcellError, OSError) as exc:
            ending = {"message": str(exc)}
        except Exception:  # noqa: BLE001 - the page gets one sentence, the log the details
            logger.exception("adapting the classifier of lab %r failed", lab)
            ending = {"message": "adapting failed unexpectedly; see the server log"}
        finally:
            done.set()
            if "sha256" not in ending:
                _remove_if_empty(output)  # the reservation of a job that wrote nothing
            try:
                if finish_job(self.store, job_id, **ending) is None and "sha256" in ending:
                    logger.warning("adapting job %s of lab %r was taken as stopped before it ended: its model %s is "
                                   "not offered", job_id, lab, output.name)
                    output.unlink(missing_ok=True)
            except Exception:  # noqa: BLE001 - the job is then found stopped by its heartbeat
                logger.exception("recording the end of adapting job %s failed", job_id)


def _remove_if_empty(path: Path) -> None:
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except OSError:
        pass


def add_bank_routes(app: FastAPI, store: Store, api_key: str | None, types: list[str], jobs: AdaptJobs | None,
                    models: LabModels, service_model: str) -> None:
    """Mount ``/v1/lab/adaptation`` and ``/v1/lab/classifier`` on ``app`` (``types``: the classifier's white-cell
    types; ``jobs``: None when this server cannot adapt, e.g. a library user built it without the workflow;
    ``models``: each lab's classifier; ``service_model``: the name of the service's own)."""
    router = APIRouter(prefix="/v1", tags=["samples"])

    def bank_of(lab: str) -> dict[str, Any]:
        with http_errors(), store.session() as session:
            return bank_summary(session, lab, types)

    def in_use(lab: str) -> dict[str, Any]:
        with store.session() as session:
            chosen = describe(lab_classifier(session, lab))
        return {"classifier": chosen, "service_model": service_model}

    @router.get("/lab/adaptation")
    def adaptation(request: Request, lab: Annotated[StoredLab, Query()] = "") -> dict[str, Any]:
        """The lab's bank, whether adapting from it can start (else why not), its latest job and the classifier
        its new counts are typed with (``classifier``: the adapted one chosen, null: ``service_model``)."""
        signed_in_caller(store, api_key, request)
        bank = bank_of(lab)
        job = jobs.latest(lab) if jobs is not None else None
        refused = None if jobs is None else jobs.refusal(lab, bank["counts"])
        blocked = "this server cannot adapt models" if jobs is None else refused and refused.message
        return {**bank, "can_adapt": blocked is None, "why_not": blocked, "job": job, **in_use(lab)}

    @router.get("/lab/audit")
    def lab_audit(request: Request, lab: Annotated[StoredLab, Query()] = "") -> list[dict[str, Any]]:
        """The lab's own audit trail (adapting jobs, classifier chosen), oldest first."""
        signed_in_caller(store, api_key, request)
        with http_errors(), store.session() as session:
            return [entry_dict(e) for e in lab_trail(session, lab)]

    @router.post("/lab/adaptation", status_code=202)
    def start(body: AdaptationRequest, request: Request) -> JSONResponse:
        """Start adapting the lab's classifier from its bank (a supervisor or an admin)."""
        person = signed_in_caller(store, api_key, request, change=True)
        if jobs is None:
            raise RequestRejected(503, "no_adapter", "this server cannot adapt models (it was built without the "
                                  "adapt workflow; `bloodcell serve` has it)")
        with http_errors():
            person.require("adapt")  # before what it asks is checked: a technician hears 403, whatever the body
        unknown = sorted(set(body.keep) - set(types))
        if unknown:
            raise RequestRejected(422, "invalid_request", f"cannot keep {', '.join(map(shown, unknown))}: not a "
                                  f"white-cell type of the model (its types: {', '.join(types)})")
        with http_errors():
            job = jobs.start(body.lab, person, bank_of(body.lab)["counts"], sorted(set(body.keep)))
        return JSONResponse(job, status_code=202)

    @router.post("/lab/classifier")
    def choose(body: ClassifierRequest, request: Request) -> dict[str, Any]:
        """Type the lab's new counts with a model its adapting wrote, or (``model``: null) with the service's own
        (a supervisor or an admin; audited). 404: not a model adapted for the lab; 409: it cannot be used."""
        person = signed_in_caller(store, api_key, request, change=True)
        with http_errors():
            models.choose(body.lab, body.model, person)
        return in_use(body.lab)

    app.include_router(router)
