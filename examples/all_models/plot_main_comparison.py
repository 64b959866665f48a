"""
The main job: every embedding, one downstream classifier
========================================================

``python -m mmfactor`` (or the ``mmfactor`` command) is the project's main job: it
loads the UCI digits (six views of 2,000 handwritten digits, shipped with mmfactor),
splits them 80/20 (stratified), fits each estimator on the training digits **without
labels**, embeds the test digits with ``transform`` (rows the models never saw), and
scores a shallow random forest (``max_depth=2``) trained on the training embeddings.
PCA of the concatenated, standardised views is the reference row.

The full job runs every model on all six views with 50 components; the command line
is::

    python -m mmfactor --output mmfactor_output

Here the same command runs on a subset that fits in the gallery's time budget: the
four smallest views, 10 components, and the models that fit in seconds on a CPU. It
writes ``results.csv``, ``results.json`` and ``results.png`` to its output folder.
"""

# %%
# Run the comparison
# ------------------
# The command, as a user types it (``--threads 1``: one CPU thread per fit, the setting
# for a busy machine, see the FAQ).
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from mmfactor.plotting import plot_comparison

output = Path(tempfile.mkdtemp(prefix="mmfactor_output_"))
cmd = [sys.executable, "-m", "mmfactor", "--models", "CMF", "DFMF",
       "--views", "fou", "kar", "zer", "mor", "--n-components", "10",
       "--threads", "1", "--quiet", "--output", str(output)]
subprocess.run(cmd, check=True)
print("written:", sorted(p.name for p in output.iterdir()))

# %%
# The results file
# ----------------
# ``results.json`` holds the protocol (data, split, downstream model, views, width,
# threads) and one row per model: macro-F1 and accuracy of the random forest on the 400
# test digits, and the time each model took to fit on the 1,600 training digits.
result = json.loads((output / "results.json").read_text())
print(json.dumps(result, indent=2))

# %%
# The figure
# ----------
# ``results.png`` is this figure: the scores (bars: macro-F1, markers: accuracy, each
# with its value and its difference to the PCA reference) and the fit times.
fig = plot_comparison(result["results"], title="Embeddings of the mfeat digits (test split)")
plt.show()
