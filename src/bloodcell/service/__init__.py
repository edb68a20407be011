"""The web service: FastAPI app, its limits and settings, observability and the page."""
