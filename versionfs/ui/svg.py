"""SVG drawn on the server: the history graph, layered DAGs, metric plots.

No JavaScript library: each drawing is a string of SVG markup built from values the
pages computed, every text escaped. Nodes of a DAG may carry links (``<a href>``),
so clicking a lineage node goes upstream.
Thread-safe: pure functions.
"""

from __future__ import annotations

from html import escape

LANE_W = 16       # px between history lanes
ROW_H = 28        # px per history row (the table rows have this height)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
          "#8c564b", "#e377c2")


def _x(lane: int) -> int:
    return 10 + lane * LANE_W


def history_row(g: dict, width: int) -> str:
    """One row of the history graph (``g`` from ``pages.history``: the lanes
    passing through, the lanes joining this commit, its lane, whether its lane goes
    on below)."""
    mid, node = ROW_H // 2, g["lane"]
    parts = [f'<svg class="graph" width="{_x(width)}" height="{ROW_H}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for lane in g["through"]:
        parts.append(_line(_x(lane), 0, _x(lane), ROW_H, lane))
    for lane in g["joins"]:
        parts.append(_line(_x(lane), 0, _x(node), mid, lane))
    if g["from_above"]:
        parts.append(_line(_x(node), 0, _x(node), mid, node))
    if g["below"]:
        parts.append(_line(_x(node), mid, _x(node), ROW_H, node))
    color = COLORS[node % len(COLORS)]
    parts.append(f'<circle cx="{_x(node)}" cy="{mid}" r="5" fill="{color}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _line(x1, y1, x2, y2, lane) -> str:
    return (f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" '
            f'stroke="{COLORS[lane % len(COLORS)]}" stroke-width="2"/>')


# -- layered DAGs (lineage, pipeline) ---------------------------------------------------

NODE_W, NODE_H, GAP_X, GAP_Y = 190, 38, 40, 56


def dag(nodes: list[dict], edges: list[tuple[str, str]]) -> str:
    """A top-down layered drawing. ``nodes``: ``{"id", "label", "sub", "kind",
    "href"}`` (kind ``run``/``stage`` are boxes, others rounded); ``edges``:
    ``(from id, to id)``, drawn with arrows. Layers by longest path from sources."""
    ids = [n["id"] for n in nodes]
    if not ids:
        return ""
    ups: dict[str, list[str]] = {i: [] for i in ids}
    for a, b in edges:
        if a in ups and b in ups:
            ups[b].append(a)
    layer: dict[str, int] = {}

    def depth(i: str, seen: frozenset = frozenset()) -> int:
        if i not in layer:
            layer[i] = 1 + max((depth(u, seen | {i}) for u in ups[i] if u not in seen),
                               default=-1)
        return layer[i]

    for i in ids:
        depth(i)
    rows: dict[int, list[str]] = {}
    for i in ids:
        rows.setdefault(layer[i], []).append(i)
    pos = {}
    width = max(len(r) for r in rows.values()) * (NODE_W + GAP_X) + GAP_X
    for y, row in rows.items():
        offset = (width - len(row) * (NODE_W + GAP_X) + GAP_X) / 2
        for k, i in enumerate(row):
            pos[i] = (offset + k * (NODE_W + GAP_X), GAP_Y / 2 + y * (NODE_H + GAP_Y))
    height = (max(rows) + 1) * (NODE_H + GAP_Y)
    out = [f'<svg class="dag" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" xmlns="http://www.w3.org/2000/svg">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
           'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           '<path d="M 0 0 L 10 5 L 0 10 z" fill="#666"/></marker></defs>']
    for a, b in edges:
        if a in pos and b in pos:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            out.append(f'<line class="edge" x1="{x1 + NODE_W / 2:.0f}" y1="{y1 + NODE_H:.0f}" '
                       f'x2="{x2 + NODE_W / 2:.0f}" y2="{y2:.0f}" stroke="#666" '
                       f'stroke-width="1.5" marker-end="url(#arrow)"/>')
    for n in nodes:
        out.append(_node(n, *pos[n["id"]]))
    out.append("</svg>")
    return "".join(out)


def _node(n: dict, x: float, y: float) -> str:
    box = n.get("kind") in ("run", "stage")
    fill = "#fff3d6" if box else "#e3f0ff"
    rx = 3 if box else 14
    label, sub = _clip(n["label"], 26), _clip(n.get("sub", ""), 30)
    body = (f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="{rx}" '
            f'fill="{fill}" stroke="#444"/>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 16:.0f}" text-anchor="middle" '
            f'font-size="12">{escape(label)}</text>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 30:.0f}" text-anchor="middle" '
            f'font-size="10" fill="#555">{escape(sub)}</text>')
    title = f'<title>{escape(n.get("title", n["label"]))}</title>'
    cls = f'node {escape(n.get("kind", ""))}'
    if n.get("href"):
        return (f'<a class="{cls}" data-id="{escape(n["id"])}" '
                f'href="{escape(n["href"])}">{title}{body}</a>')
    return f'<g class="{cls}" data-id="{escape(n["id"])}">{title}{body}</g>'


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- metric plots across runs -------------------------------------------------------------

PLOT_W, PLOT_H, PAD = 320, 160, 36


def plot(title: str, labels: list[str], values: list[float | None]) -> str:
    """One metric across runs: a polyline over the runs in order, a dot per run
    with a value, the smallest and largest value on the axis."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    out = [f'<svg class="plot" width="{PLOT_W}" height="{PLOT_H}" '
           f'xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{PLOT_W / 2:.0f}" y="14" text-anchor="middle" font-size="12">'
           f'{escape(title)}</text>',
           f'<line x1="{PAD}" y1="{PLOT_H - PAD}" x2="{PLOT_W - 10}" y2="{PLOT_H - PAD}" '
           'stroke="#999"/>',
           f'<line x1="{PAD}" y1="24" x2="{PAD}" y2="{PLOT_H - PAD}" stroke="#999"/>']
    if pts:
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        span = (hi - lo) or 1.0
        n = max(len(values) - 1, 1)

        def xy(i, v):
            return (PAD + 8 + i * (PLOT_W - PAD - 26) / n,
                    PLOT_H - PAD - 6 - (v - lo) / span * (PLOT_H - PAD - 40))

        coords = [xy(i, v) for i, v in pts]
        out.append('<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
        for (i, v), (x, y) in zip(pts, coords):
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#1f77b4">'
                       f'<title>{escape(labels[i])}: {v:.6g}</title></circle>')
        out.append(f'<text x="{PAD - 4}" y="{PLOT_H - PAD - 4}" text-anchor="end" '
                   f'font-size="10">{lo:.4g}</text>')
        out.append(f'<text x="{PAD - 4}" y="32" text-anchor="end" font-size="10">'
                   f'{hi:.4g}</text>')
    for i, label in enumerate(labels):
        x = PAD + 8 + i * (PLOT_W - PAD - 26) / max(len(labels) - 1, 1)
        out.append(f'<text x="{x:.0f}" y="{PLOT_H - PAD + 14}" text-anchor="middle" '
                   f'font-size="9">{escape(_clip(label, 10))}</text>')
    out.append("</svg>")
    return "".join(out)


def _href(base: str, /, **params) -> str:
    from urllib.parse import urlencode
    return base + "?" + urlencode({k: v for k, v in params.items() if v})


def lineage(lin: dict) -> str:
    """The lineage graph of a ``Lineage.to_dict()``: upstream at the top, the file
    asked about at the bottom; a file links to its own lineage (upstream), a run to
    its page."""
    nodes, edges = [], []
    for a in lin["entities"]:
        href = _href("/lineage", rev=a["commit"], path=a["path"]) \
            if a["commit"] and a["origin"] == "workspace" else None
        nodes.append({"id": a["key"], "label": a["path"] or ".", "kind": "artifact",
                      "sub": f'{a["kind"]} {a["id"][:10]}', "href": href,
                      "title": f'{a["path"]} ({a["id"]})'})
        if a["part_of"]:
            edges.append((a["part_of"], a["key"]))
        edges += [(m, a["key"]) for m in a["members"]]
    for r in lin["runs"]:
        nodes.append({"id": "run:" + r["id"], "label": f'run {r["name"]}', "kind": "run",
                      "sub": r["id"][:12], "href": _href("/run", id=r["id"]),
                      "title": r["command"]})
        edges += [(i["entity"], "run:" + r["id"]) for i in r["inputs"]]
        edges += [("run:" + r["id"], o) for o in r["outputs"]]
    return dag(nodes, edges)


def pipeline(pipe: dict) -> str:
    """The pipeline DAG of ``vfs dag --json``: each stage a box, an edge where a
    stage reads what another makes."""
    nodes = [{"id": s["name"], "label": s["name"], "kind": "stage",
              "sub": _clip(s["cmd"] if isinstance(s["cmd"], str) else " ".join(s["argv"]), 30),
              "title": " ".join(s["argv"]) or str(s["cmd"])} for s in pipe["stages"]]
    return dag(nodes, [(e["from"], e["to"]) for e in pipe["edges"]])
