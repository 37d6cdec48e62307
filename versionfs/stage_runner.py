"""``python -m versionfs.stage_runner MODULE.py:FUNC``: run one Python-declared stage.

``vfs repro`` runs a stage declared with ``@versionfs.stage`` as this command, in
the workspace root: it imports the module file, reads the stage's params as ``vfs
run`` records them, and calls the function with them (see ``versionfs.pystage``).
Exit status 0 when the function returns, 1 (with the error on stderr) when it
raises, 2 for a bad argument.
"""

from __future__ import annotations

import sys
import traceback


def main(argv: list[str]) -> int:
    from .errors import VfsError
    from .ops.params import flatten, read_params
    from .ops.pipeline import param_specs
    from .pystage import call_args, collect, import_file
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m versionfs.stage_runner MODULE.py:FUNC", file=sys.stderr)
        return 2
    path, _, func = argv[0].rpartition(":")
    try:
        mod = import_file(path)
        decls = [d for d in collect(mod, path) if d.func == func]
        if not decls:
            print(f"error: {path} declares no stage function {func!r}", file=sys.stderr)
            return 2
        decl = decls[0]
        specs = param_specs(list(decl.params), f"stage {decl.name}")
        values = {}
        for group in read_params(specs, ".").values():
            values.update(flatten(group))
        kwargs = call_args(decl, values)
    except VfsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        getattr(mod, func)(**kwargs)
    except Exception:  # the stage's own failure: show it as Python would
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
