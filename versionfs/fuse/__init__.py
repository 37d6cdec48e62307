"""The FUSE mount: the only package that imports pyfuse3.

``ops`` adapts a ``view.View`` to ``pyfuse3.Operations`` (translation only);
``mount`` runs the mount's life (checks, daemon, readiness, signals, unmount);
``mounts`` reads the mount table and the daemons' state files (list, umount).
"""
