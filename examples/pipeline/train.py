"""Fit y = a*x + b to data/prepared/train.csv by gradient descent; write model.json."""
import json

import yaml

p = yaml.safe_load(open("params.yaml"))["train"]
pts = [tuple(map(float, line.split(",")))
       for line in open("data/prepared/train.csv").read().splitlines()[1:]]
a = b = 0.0
for _ in range(p["epochs"]):
    ga = sum(2 * (a * x + b - y) * x for x, y in pts) / len(pts)
    gb = sum(2 * (a * x + b - y) for x, y in pts) / len(pts)
    a, b = a - p["lr"] * ga, b - p["lr"] * gb
json.dump({"a": a, "b": b}, open("model.json", "w"))
print(f"train: a={a:.3f} b={b:.3f}")
