"""The FUSE mount: the only package that imports pyfuse3.

``ops`` adapts a ``view.View`` to ``pyfuse3.Operations`` (translation only);
``mount`` is the command's side (checks, fork the daemon, wait for readiness) and
imports neither pyfuse3 nor trio; ``serve`` runs one mount in its process (init,
trio loop, readiness probe, signals, unmount);
``mounts`` reads the mount table and the daemons' state files (list, umount).
"""
