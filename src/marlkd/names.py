"""Names shared across layers, kept free of package imports (only the standard library's ``typing``) so
the experiments layer can read them without loading torch: the dataset quality tiers, the ablation
switches of ``ours``, the finetuning pseudo-method that starts from random weights and the built-in
methods' display names (their registry entries take them from here)."""

from typing import Literal, get_args

# Dataset quality tiers (``marlkd.experts`` makes them): the paper's (the expert, and the expert mixed with
# random actions), then those made from the expert's training checkpoints (``marlkd.tiers``), then random.
# The Literal types let the command line list the choices of config fields annotated with them.
Quality = Literal["good", "normal", "poor", "medium", "early", "replay", "mixed", "random"]
QUALITIES: tuple[str, ...] = get_args(Quality)
# Values of ``ours``'s config field ``ablation``: the paper's Table 3, in its order, then the remedies of
# the relational loss and of the teacher's targets (``marlkd.algos.ours``).
Ablation = Literal[
    "full",
    "no-momentum",
    "no-mapping",
    "no-kl",
    "no-kl-no-mapping",
    "kl-only",
    "shared-mapping",
    "ema-mapping",
    "frozen-mapping",
    "raw-teacher",
    "spread",
    "eval-target",
]
ABLATIONS: tuple[str, ...] = get_args(Ablation)
PAPER_ABLATIONS, REMEDIES = ABLATIONS[:7], ABLATIONS[7:]
# The "method" of a finetuning run (or sweep) that starts MAPPO from random weights.
SCRATCH = "scratch"
# Display names of the built-in methods (the paper's), by registry name: each method's ``AlgoEntry`` takes
# its ``display_name`` from here, and reports read it here without importing the methods.
METHOD_NAMES: dict[str, str] = {
    "bc": "BC",
    "idt": "IDT",
    "madt": "MADT",
    "cql": "MA-CQL",
    "icq": "MA-ICQ",
    "bcq": "MA-BCQ",
    "gail": "MA-GAIL",
    "airl": "MA-AIRL",
    "teacher": "Teacher (centralized DT)",
    "ours": "Ours",
    SCRATCH: "From scratch",
}
