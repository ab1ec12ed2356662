"""Property-based API fuzzing with schemathesis: requests generated from the app's own OpenAPI
spec, a bounded number per operation, must never end in a 500 (bad input is a 4xx).

Driven through schemathesis' Python API (operation → Hypothesis strategy) rather than its pytest
plugin, which does not load under this pytest version.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from kairos.config import Settings
from serving.app import create_app
from serving.deps import Services

#: Examples per operation: enough to hit bounds, odd numbers and unicode; keeps the module well
#: under a minute on two cores.
MAX_EXAMPLES = 6


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings_ = Settings(home=tmp_path_factory.mktemp("kairos_fuzz"), feast_project=f"fz{uuid.uuid4().hex[:8]}",
                         auth_required=False, ranker="transparent")
    services = Services.start(settings_)
    # The SSE stream never ends by itself; its snapshot twin (the pricing route) is fuzzed.
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(services=services)).exclude(
        path_regex=r".*/stream$")
    services.close()


def test_no_operation_answers_500(api_schema: Any) -> None:
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call()
            if response.status_code == 500:
                failures.append(f"{case.method} {case.formatted_path} query={case.query} body={case.body!r} "
                                f"→ {response.text[:300]}")
            elif response.status_code >= 400:
                error = response.json()["error"]
                assert error["status"] == response.status_code and error["message"], response.text

        run()
    assert not failures, "\n".join(failures[:20])
