"""The web portal: server-rendered pages for owners, operators and auditors on the API's own app.

Pages sign in with an API key (a signed, HttpOnly session cookie afterwards), call the same service layer
as the API and the command line, and verify entries in the browser against the chain's JSON-RPC
(``static/verify.js``); ``rpc.py`` is the read-only JSON-RPC endpoint for chains without a node of their
own. See docs/portal.md.
"""

from __future__ import annotations

from backend.portal.app import install

__all__ = ["install"]
