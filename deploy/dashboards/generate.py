#!/usr/bin/env python3
"""Writes deploy/dashboards/wixprint.json (Grafana, Prometheus data source) from panels.toml.

The JSON is generated, the TOML is the source: edit panels.toml, run this, commit both.
tests/tests/telemetry.rs fails when the JSON's queries differ from the TOML's, and evaluates
every query against a real Prometheus. Python 3.11+ (tomllib), nothing else.
"""
import json
import pathlib
import sys
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
KINDS = {"stat": "stat", "state": "state-timeline", "timeseries": "timeseries"}
WIDTH = {"stat": 6, "state": 12, "timeseries": 12}
HEIGHT = 8


def panel(p, pid, x, y):
    kind = p["kind"]
    targets = [
        {"datasource": DS, "expr": q["expr"], "legendFormat": q.get("legend", ""), "refId": chr(ord("A") + i)}
        for i, q in enumerate(p["query"])
    ]
    out = {
        "id": pid,
        "type": KINDS[kind],
        "title": p["title"],
        "description": p.get("description", ""),
        "datasource": DS,
        "gridPos": {"h": HEIGHT, "w": WIDTH[kind], "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": p.get("unit", "short")}, "overrides": []},
        "options": {},
    }
    if kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "none", "textMode": "value_and_name"}
    if kind == "state":
        # The queries return 1 for the current state; the legend names it.
        out["options"] = {"showValue": "never", "mergeValues": True, "rowHeight": 0.8}
        out["fieldConfig"]["defaults"]["color"] = {"mode": "fixed", "fixedColor": "green"}
    return out


def build(spec):
    panels, pid, y, row = [], 1, 0, None
    x = 0
    for p in spec["panel"]:
        if p["row"] != row:
            if x:
                y += HEIGHT
            row, x = p["row"], 0
            panels.append({"id": pid, "type": "row", "title": row, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            pid, y = pid + 1, y + 1
        w = WIDTH[p["kind"]]
        if x + w > 24:
            x, y = 0, y + HEIGHT
        panels.append(panel(p, pid, x, y))
        pid, x = pid + 1, x + w
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "title": "Wix printer: is the kitchen OK?",
        "uid": "wixprint",
        "description": "Generated from deploy/dashboards/panels.toml by generate.py; do not edit by hand.",
        "tags": ["wixprint"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }


def main():
    spec = tomllib.loads((HERE / "panels.toml").read_text())
    text = json.dumps(build(spec), indent=2, ensure_ascii=False) + "\n"
    out = HERE / "wixprint.json"
    if "--check" in sys.argv:
        if not out.exists() or out.read_text() != text:
            sys.exit(f"{out} is out of date: run python3 {pathlib.Path(__file__)}")
        return
    out.write_text(text)
    print(f"wrote {out} ({len(spec['panel'])} panels)")


if __name__ == "__main__":
    main()
