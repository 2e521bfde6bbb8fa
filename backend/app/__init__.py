"""The application layer: the use cases every door calls.

The CLI (`backend/cli/`), the API (`backend/api/`), the portal and `v2g operate` parse their input, call
one use case here and format its result; what is decided (the tariff, the fee, the challenge window, the
claim batch, the escrow top-up, which keys a step loads) is decided here once, from one
:class:`backend.config.Settings`.
"""
