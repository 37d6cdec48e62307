"""Average the agents' positions of the hot simulations (temperature >= MIN).

Usage: python analyze.py SIMDIR MIN OUT.json

Reads every sim_*/params.yml, but opens data.h5 only of the simulations that pass
the filter: exactly those files are the run's observed inputs.
"""

import glob
import json
import os
import sys

import h5py
import yaml


def main() -> None:
    root, low, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    result = {}
    for d in sorted(glob.glob(os.path.join(root, "sim_*"))):
        with open(os.path.join(d, "params.yml")) as f:
            params = yaml.safe_load(f)
        if params["temperature"] < low:
            continue
        with h5py.File(os.path.join(d, "data.h5"), "r") as h5:
            means = [float(h5["agents"][name][:].mean()) for name in h5["agents"]]
        result[os.path.basename(d)] = round(sum(means) / len(means), 6)
    with open(out, "w") as f:
        json.dump({"selected": len(result), "mean_position": result}, f, indent=1)
    print(f"analyzed {len(result)} simulations")


if __name__ == "__main__":
    main()
