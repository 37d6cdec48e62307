"""The verbs, one module each: snapshot, checkout, diff, refs (tags and branches),
gc, fsck; and the helpers they share below them: reachability (``reach``) and gc/fsck roots (``roots``).

Verbs do not import each other (tests/test_layers.py); the public ``versionfs.Repo``
(api.py) and the CLI put them together.
"""
