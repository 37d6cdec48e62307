"""Write a dantro-style simulation output tree: sim_*/params.yml and sim_*/data.h5.

Usage: python make_sims.py OUTDIR [N]   (N simulations, default 6)

Each simulation has a params.yml (seed, temperature) and an HDF5 file with a
time series group per agent. Deterministic: the same N gives the same bytes.
"""

import os
import sys

import h5py
import numpy as np
import yaml


def main() -> None:
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    for i in range(n):
        d = os.path.join(out, f"sim_{i:02d}")
        os.makedirs(d, exist_ok=True)
        params = {"seed": i, "temperature": round(0.5 + 0.25 * i, 2)}
        with open(os.path.join(d, "params.yml"), "w") as f:
            yaml.safe_dump(params, f)
        rng = np.random.default_rng(i)
        with h5py.File(os.path.join(d, "data.h5"), "w", track_order=True) as h5:
            g = h5.create_group("agents")
            for a in range(3):
                g.create_dataset(f"agent_{a}", data=rng.normal(params["temperature"],
                                                               1.0, size=(200, 2)))
    print(f"wrote {n} simulations to {out}")


if __name__ == "__main__":
    main()
