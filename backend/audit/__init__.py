"""Audit: event index, ledger replay, statements, reconciliation, inclusion proofs."""
