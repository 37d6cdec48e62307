"""Split data/raw.csv into data/prepared/{train,test}.csv."""
import os
import random

import yaml

p = yaml.safe_load(open("params.yaml"))["prepare"]
rows = open("data/raw.csv").read().splitlines()[1:]
random.Random(p["seed"]).shuffle(rows)
n_test = int(len(rows) * p["split"])
os.makedirs("data/prepared", exist_ok=True)
for name, part in (("test", rows[:n_test]), ("train", rows[n_test:])):
    with open(f"data/prepared/{name}.csv", "w") as f:
        f.write("x,y\n" + "\n".join(part) + "\n")
print(f"prepare: {len(rows) - n_test} train rows, {n_test} test rows")
