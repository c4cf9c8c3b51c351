from __future__ import annotations

import pytest

from tests.target_service.loopback import Reference


@pytest.fixture(scope="module")
def reference(tiny_target) -> Reference:
    return Reference(tiny_target)
