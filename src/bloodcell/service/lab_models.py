"""The classifier a lab's new counts are typed with: the service's own, or an adapted one a supervisor chose.

A chosen model (:mod:`bloodcell.store.lab_classifiers`) is a file an adapting job of the lab wrote to the models
folder (``serve --models-dir``); it is loaded by the project's checkpoint loader (safetensors, validated; never a
pickle) only while its SHA-256 is the one the job recorded and its classes are the service model's, and kept
loaded while some lab counts with it (its file's size and time are checked before each use, and it is read again
when they change). A chosen model that went missing or changed on disk refuses the lab's counts in one sentence
(409) rather than typing them with another model than the one recorded.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bloodcell.errors import BloodcellError
from bloodcell.inference.predictor import load
from bloodcell.provenance import file_sha256
from bloodcell.service.limits import RequestRejected
from bloodcell.store.database import Store
from bloodcell.store.lab_classifiers import adapted_model, chosen_sha256s, lab_classifier, use_classifier
from bloodcell.store.users import Person

#: The lab of the service's counts: the page keeps samples without a lab name.
COUNTED_LAB = ""


class LabModels:
    """Each lab's classifier: ``default`` (the service's own) unless an adapted one was chosen for the lab."""

    def __init__(self, store: Store, default: Any, folder: Path | None, engine: str = "torch",
                 threads: int | None = None):
        self.store, self.default, self.folder, self.engine, self.threads = store, default, folder, engine, threads
        self._loaded: dict[str, tuple[tuple[int, int], Any]] = {}  # SHA-256 -> (file size and time, classifier)
        self._lock = threading.Lock()

    def chosen(self, lab: str) -> str | None:
        """The file name of the adapted model chosen for ``lab`` (None: the service's own)."""
        with self.store.session() as session:
            row = lab_classifier(session, lab)
            return row.model_name if row is not None else None

    def for_lab(self, lab: str) -> Any:
        """The classifier ``lab``'s new counts are typed with (loaded once, checked again when its file changes)."""
        with self.store.session() as session:
            row = lab_classifier(session, lab)
            chosen = None if row is None else (row.model_name, row.model_sha256)
        return self.default if chosen is None else self._checked(*chosen)

    def choose(self, lab: str, model: str | None, person: Person) -> dict[str, Any] | None:
        """Type ``lab``'s new counts with ``model`` (a file one of its finished adapting jobs wrote; None: the
        service's own model), after loading and checking it; audited."""
        person.require("adapt")
        chosen = None
        if model is not None:
            with self.store.session() as session:
                job = adapted_model(session, lab, model)
                chosen = (job.model_name, job.model_sha256)
            self._checked(*chosen)
        with self.store.session() as session:
            after = use_classifier(session, lab, chosen, person)
        with self.store.session() as session:
            kept = chosen_sha256s(session)
        with self._lock:  # a model no lab counts with any more is let go
            self._loaded = {sha: loaded for sha, loaded in self._loaded.items() if sha in kept}
        return after

    def _checked(self, name: str, sha256: str) -> Any:
        with self._lock:
            path = self._path(name)
            try:
                stamp = _stamp(path)
            except OSError as exc:
                raise _unusable(name, f"cannot be read ({exc.strerror or exc})") from None
            if sha256 in self._loaded and self._loaded[sha256][0] == stamp:
                return self._loaded[sha256][1]
            self._loaded.pop(sha256, None)
            if file_sha256(path) != sha256:
                raise _unusable(name, "was changed in the models folder since it was adapted")
            try:
                classifier = load(path, engine=self.engine, num_threads=self.threads)
            except BloodcellError as exc:
                raise _unusable(name, f"cannot be loaded ({exc})") from None
            if list(classifier.class_names) != list(self.default.class_names):
                raise _unusable(name, "does not type the service model's classes")
            self._loaded[sha256] = (stamp, classifier)
            return classifier

    def _path(self, name: str) -> Path:
        if self.folder is None:
            raise _unusable(name, "is in a models folder this server was not given (serve --models-dir)")
        path = self.folder / name
        if Path(name).name != name or path.suffix != ".safetensors" or not path.is_file():
            raise _unusable(name, f"is not in the models folder {self.folder}")
        return path


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _unusable(name: str, why: str) -> RequestRejected:
    return RequestRejected(409, "model_unavailable", f"the model chosen for this lab, {name}, {why}: choose it "
                           "again after adapting anew, or switch the lab back to the service's own model")
