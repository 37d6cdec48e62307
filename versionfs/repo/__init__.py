"""An open repository: its layout on disk, lock, refs (``refs`` is the one writer of
HEAD, branches and tags), revisions, and the machine's live mounts of it (``mounts``).
"""
