"""The HTTP front door: FastAPI app factory, one router per resource."""
