"""The user's directory: ignore rules, reading files into chunks (``ingest``),
scanning a tree with the stat cache (``scan``) and writing a planned checkout into it
(``materialize``).
"""
