"""Names shared across layers, kept free of imports so the experiments layer can read them without
loading torch: the dataset quality tiers, the ablation switches of ``ours`` and the finetuning
pseudo-method that starts from random weights."""

# Dataset quality tiers (``marlkd.experts`` makes them): the paper's (the expert, and the expert mixed with
# random actions), then those made from the expert's training checkpoints (``marlkd.tiers``), then random.
QUALITIES = ("good", "normal", "poor", "medium", "early", "replay", "mixed", "random")
# Values of ``ours``'s config field ``ablation``, in the order of the paper's Table 3.
ABLATIONS = ("full", "no-momentum", "no-mapping", "no-kl", "no-kl-no-mapping", "kl-only", "shared-mapping")
# The "method" of a finetuning run (or sweep) that starts MAPPO from random weights.
SCRATCH = "scratch"
