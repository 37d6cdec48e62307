"""Mean squared error of model.json on data/prepared/test.csv; write eval.json."""
import json

m = json.load(open("model.json"))
pts = [tuple(map(float, line.split(",")))
       for line in open("data/prepared/test.csv").read().splitlines()[1:]]
mse = sum((m["a"] * x + m["b"] - y) ** 2 for x, y in pts) / len(pts)
json.dump({"mse": mse, "n": len(pts)}, open("eval.json", "w"))
print(f"evaluate: mse={mse:.3f}")
