"""The HTTP service: the FastAPI app and page, admission by predicted wait, connection and
body limits, telemetry and the typed answers."""
