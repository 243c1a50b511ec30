"""The HTTP API (Litestar + msgspec): commands go to the application, queries to read tables."""
