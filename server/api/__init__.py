"""HTTP API: one module (Sanic Blueprint) per endpoint family."""
