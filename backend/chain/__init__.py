"""Chain layer: compiled artifacts, deployment and typed contract clients."""
