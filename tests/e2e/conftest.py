"""The e2e suite runs services the way the integration suite does."""

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with integration
    registry_client,
    registry_service,
    registry_settings,
)
