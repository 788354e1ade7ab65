"""Name -> class, used to rebuild a model from a checkpoint (``model_class`` + ``model_kwargs``).

Explicit on purpose: a checkpoint can only name a class listed here, never an arbitrary import.
"""
from models.align_hetero import AlignHeteroMLP
from models.deep_ensemble import DeepEnsemble
from models.dual_head import DualHeadMLP
from models.gp import StackedGP
from models.mdn import MDN
from models.mlp import MLP
from models.signed_ratio import SignedRatio

MODEL_CLASSES = {
    "MLP": MLP,
    "AlignHeteroMLP": AlignHeteroMLP,
    "DualHeadMLP": DualHeadMLP,
    "MDN": MDN,
    "StackedGP": StackedGP,
    "DeepEnsemble": DeepEnsemble,
    "SignedRatio": SignedRatio,
}
