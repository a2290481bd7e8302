"""Convert published files (read from fetched snapshots, see SOURCES.md) into task CSVs.

Usage: python bench/heldout/convert.py RAW_DIR OUT_DIR, where RAW_DIR holds the files
extracted with `git show COMMIT:PATH` under the names used below. Rows are filtered and
columns renamed only; the one derived value is openclip's error = 1 - acc1.
"""
import sys
from pathlib import Path

import pandas as pd

raw, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)

# Chinchilla (Hoffmann et al. 2022) Approach-3 points, extracted from the paper's SVG by Besiroglu et al.
c = pd.read_csv(raw / "chin.csv")
pd.DataFrame({"params": c["Model Size"], "flops": c["Training FLOP"], "loss": c["loss"]}).to_csv(
    out / "chinchilla_isoflop.csv", index=False)

# (Mis)Fitting (Li et al. 2025): last checkpoint of each open_lm run, C4 eval loss.
m = pd.read_csv(raw / "misfit.csv")
pd.DataFrame({"params": m["N"], "flops": m["C_6ND"], "loss": m["C4 Eval Loss"]}).dropna().to_csv(
    out / "misfitting_openlm.csv", index=False)

# OpenCLIP reproducible scaling laws (Cherti et al. 2023): ImageNet-1k zero-shot, LAION-trained models.
z = pd.read_csv(raw / "clip.csv")
z = z[(z.downstream_dataset == "imagenet1k") & (z.upstream_dataset != "CLIP-WIT")]
pd.DataFrame({"group": z.upstream_dataset, "samples_seen": z.samples_seen, "gmacs_total": z.gmacs_total,
              "error": 1.0 - z.acc1}).to_csv(out / "openclip_imagenet.csv", index=False)

# Observational scaling laws (Ruan et al. 2024): MMLU of public base models, families with >= 5 models.
o = pd.read_csv(raw / "obs.csv")
o = o[o.groupby("Model Family")["Model"].transform("size") >= 5].dropna(subset=["FLOPs (1E21)", "MMLU"])
pd.DataFrame({"group": o["Model Family"], "flops_1e21": o["FLOPs (1E21)"], "mmlu": o["MMLU"]}).to_csv(
    out / "obsscaling_mmlu.csv", index=False)

# Revisiting neural scaling laws (Alabdulmohsin et al. 2022), language-model learning curves, as
# republished in IBM/ColPret aggregated_eval/revisiting_lang.csv: one group per model size.
r = pd.read_csv(raw / "rev.csv")
r = r[(r.Domain == "LM") & (r.Task == "val_loss")]
pd.DataFrame({"group": "lm_" + r.Model.astype(str), "seen_examples": r["Seen Examples"],
              "loss": r.Loss}).to_csv(out / "revisiting_lm.csv", index=False)

# Same file, NMT learning curves (log perplexity), one group per architecture.
r = pd.read_csv(raw / "rev.csv")
r = r[(r.Domain == "NMT")]
pd.DataFrame({"group": r.Model.astype(str), "seen_examples": r["Seen Examples"],
              "log_perplexity": r.Loss}).to_csv(out / "revisiting_nmt.csv", index=False)

# Over-training (Gadre et al. 2024, mlfoundations/scaling): exp_data/models/*.json, one run each;
# loss = `results` entry whose val_data is the C4 validation set; group = dataset_name.
# flops = 6 * params * tokens (the paper's C = 6ND), computed here: no published compute column.
import json
rows = []
for f in sorted((raw / "otm").glob("*.json")):
    d = json.loads(f.read_text())
    hp = d["hyperparameters"]
    c4 = [r["loss"] for r in d["results"] if any("c4_val" in v for v in r["val_data"])]
    if len(c4) == 1:
        rows.append({"group": d["dataset_name"], "flops": 6.0 * hp["params"] * hp["tokens"],
                     "params": hp["params"], "loss": c4[0]})
pd.DataFrame(rows).to_csv(out / "overtraining_openlm.csv", index=False)
