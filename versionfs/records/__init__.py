"""Ids and records: BLAKE3 (``hashing``), the frozen records and their canonical
encoding (``model``), and where files are cut into chunks (``chunking``).

Nothing here touches the disk; everything above builds on these values.
"""
