"""Property-based API tests: schemathesis generates requests from the app's own OpenAPI schema.

Every generated request (valid or not) must get a documented status, the documented content
type and a body matching the documented schema; never a 5xx. The ``positive_data_acceptance``
check is left out: a schema cannot say "these bytes must be an image", so schema-valid random
bytes are rightly refused with 400/415/422 (those refusals are checked by the other checks).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from service_helpers import save_tiny_checkpoint

from bloodcell.inference.predictor import load
from bloodcell.service.app import create_app
from bloodcell.service.settings import ServiceSettings

# schemathesis reads the schema when the module is collected, so the app is built here;
# the checkpoint is loaded into memory and its temporary folder removed at once.
with tempfile.TemporaryDirectory(prefix="bloodcell-schema-test-") as _folder:
    _classifier = load(save_tiny_checkpoint(Path(_folder) / "tiny.safetensors"))


def _constant_counter(image, classifier=None, **options):
    """Stands in for the photo counter: this test is about the HTTP layer, not about counting."""
    return {"counts": {"RBC": 1, "WBC": 0, "Platelets": 0}, "wbc_types": {}, "boxes": []}


# schemathesis's client names the host "testserver".
_app = create_app(ServiceSettings(allowed_hosts=("testserver",)), classifier=_classifier,
                  count_image=_constant_counter, access_log=io.StringIO())
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=12, deadline=2000, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_openapi_schema(case):
    response = case.call()
    assert response.status_code < 500, response.text
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
