"""A ``Lineage`` written for other tools: W3C PROV-JSON, Graphviz DOT, Mermaid.

PROV mapping (https://www.w3.org/Submission/prov-json/):

* each artifact (a path with a content id) is an ``entity`` ``vfs:PATH@ID`` with
  ``prov:label`` (the path), ``vfs:path``, ``vfs:contentId``, ``vfs:kind``,
  ``vfs:commit``, ``vfs:origin``; a directory is also a ``prov:Collection``;
* each run is an ``activity`` ``run:ID`` with ``prov:startTime``/``prov:endTime``,
  ``prov:label`` (its name), ``vfs:command``, ``vfs:status``, ``vfs:exitCode``,
  ``vfs:commit``, ``vfs:code`` (git commit) and ``vfs:params``;
* ``used`` (activity, entity, ``prov:role`` ``declared`` or ``observed``, at the
  run's start), ``wasGeneratedBy`` (entity, activity, at the run's end),
  ``wasAssociatedWith`` (activity, the ``prov:Person`` agent ``vfs:user@host``),
  ``hadMember`` (directory, an entry a run made inside it).

Thread-safety: functions of a frozen value.
"""

from __future__ import annotations

import datetime as _dt
import json

from .lineage import Lineage

__all__ = ["to_prov", "to_dot", "to_mermaid"]

NAMESPACES = {"vfs": "urn:versionfs:", "run": "urn:versionfs:run:"}


def _iso(ns: int) -> str:
    t = _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc)
    return t.isoformat(timespec="microseconds")


def _qname(value: str) -> dict:
    return {"$": value, "type": "prov:QUALIFIED_NAME"}


def to_prov(lin: Lineage) -> dict:
    """The lineage as a PROV-JSON document (a dict; ``json.dumps`` it)."""
    doc: dict = {"prefix": dict(NAMESPACES), "entity": {}, "activity": {}, "agent": {},
                 "used": {}, "wasGeneratedBy": {}, "wasAssociatedWith": {},
                 "hadMember": {}}
    ent = {k: f"vfs:{k}" for k in lin.artifacts}
    for k, a in lin.artifacts.items():
        e = {"prov:label": a.path, "vfs:path": a.path, "vfs:contentId": a.id,
             "vfs:kind": a.kind, "vfs:origin": a.origin}
        if a.commit:
            e["vfs:commit"] = a.commit
        if a.kind == "dir":
            e["prov:type"] = _qname("prov:Collection")
        doc["entity"][ent[k]] = e
    n = 0

    def relation(kind: str, body: dict) -> None:
        nonlocal n
        n += 1
        doc[kind][f"_:{kind[0]}{n}"] = body

    for rid, s in lin.steps.items():
        r = s.run
        act = f"run:{rid}"
        a = {"prov:label": r.name, "prov:startTime": _iso(r.start_ns),
             "prov:endTime": _iso(r.end_ns), "vfs:command": s.command,
             "vfs:status": r.status, "vfs:exitCode": r.exit_code,
             "vfs:params": json.dumps(r.params, sort_keys=True)}
        if r.commit:
            a["vfs:commit"] = r.commit
        code = (r.env.get("git") or {}).get("commit")
        if code:
            a["vfs:code"] = code
        doc["activity"][act] = a
        user, host = r.env.get("user") or "unknown", r.env.get("host") or "unknown"
        agent = f"vfs:{user}@{host}"
        doc["agent"].setdefault(agent, {"prov:type": _qname("prov:Person"),
                                        "prov:label": f"{user}@{host}"})
        relation("wasAssociatedWith", {"prov:activity": act, "prov:agent": agent})
        for k, role in s.inputs:
            relation("used", {"prov:activity": act, "prov:entity": ent[k],
                              "prov:role": role, "prov:time": _iso(r.start_ns)})
    for k, a in lin.artifacts.items():
        if a.produced_by and a.produced_by in lin.steps:
            end = lin.steps[a.produced_by].run.end_ns
            relation("wasGeneratedBy", {"prov:entity": ent[k],
                                        "prov:activity": f"run:{a.produced_by}",
                                        "prov:time": _iso(end)})
        members = list(a.members)
        for other_key, other in lin.artifacts.items():
            if other.part_of == k:
                members.append(other_key)
        for m in members:
            relation("hadMember", {"prov:collection": ent[k], "prov:entity": ent[m]})
    return {kind: v for kind, v in doc.items() if v}


def _labels(lin: Lineage):
    """Short node ids (``e1``, ``r1``) and one-line labels for graph formats."""
    ids = {k: f"e{i}" for i, k in enumerate(lin.artifacts, 1)}
    ids.update({rid: f"r{i}" for i, rid in enumerate(lin.steps, 1)})
    return ids


def _edges(lin: Lineage):
    """``(from key, to key, style)``: input → run, run → output, dir ⇢ member."""
    for rid, s in lin.steps.items():
        for k, role in s.inputs:
            yield k, rid, role
    for k, a in lin.artifacts.items():
        if a.produced_by and a.produced_by in lin.steps:
            yield a.produced_by, k, "generated"
        for m in a.members:
            yield k, m, "member"
        if a.part_of:
            yield a.part_of, k, "member"


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(lin: Lineage) -> str:
    """Graphviz DOT: artifacts as notes, runs as boxes, edges in data-flow order."""
    ids = _labels(lin)
    out = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="monospace"];']
    for k, a in lin.artifacts.items():
        style = ", style=bold" if k == lin.target else ""
        out.append(f'  {ids[k]} [shape=note, label="{_dot_escape(a.path)}\\n{a.id[:12]}"'
                   f"{style}];")
    for rid, s in lin.steps.items():
        out.append(f'  {ids[rid]} [shape=box, style=rounded, label='
                   f'{_dot_str(f"run {rid[:12]} {s.run.name}")}];')
    for src, dst, kind in _edges(lin):
        attrs = {"observed": " [style=dashed, label=observed]",
                 "member": " [style=dotted, arrowhead=none]"}.get(kind, "")
        out.append(f"  {ids[src]} -> {ids[dst]}{attrs};")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(lin: Lineage) -> str:
    """A Mermaid flowchart: artifacts as rectangles, runs as subroutine shapes."""
    ids = _labels(lin)
    out = ["flowchart LR"]
    for k, a in lin.artifacts.items():
        out.append(f'  {ids[k]}["{_mermaid_text(a.path)}<br/>{a.id[:12]}"]')
    for rid, s in lin.steps.items():
        out.append(f'  {ids[rid]}[["run {rid[:12]} {_mermaid_text(s.run.name)}"]]')
    for src, dst, kind in _edges(lin):
        arrow = {"observed": "-. observed .->", "member": "-.-"}.get(kind, "-->")
        out.append(f"  {ids[src]} {arrow} {ids[dst]}")
    return "\n".join(out) + "\n"
