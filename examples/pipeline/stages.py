"""A stage declared in Python: vfs.yaml names this module under `python:`."""
import json

from versionfs import stage


@stage(deps=["model.json", "eval.json"], outs=["report.md"],
       params=["params.yaml:report.digits"])
def report(digits):
    model = json.load(open("model.json"))
    mse = json.load(open("eval.json"))["mse"]
    with open("report.md", "w") as f:
        f.write(f"# Model\n\ny = {model['a']:.{digits}f} x + {model['b']:.{digits}f}\n\n"
                f"test MSE: {mse:.{digits}f}\n")
