"""Network classes and the one checkpoint format.

    from models import MLP, AlignHeteroMLP, DualHeadMLP, MODEL_CLASSES
    from models.model_utils import (load_backbone_from_trained_mlp, save_model, load_model,
                                    save_checkpoint, load_checkpoint, read_checkpoint_meta)
"""
from models.align_hetero import AlignHeteroMLP
from models.backbone import Backbone
from models.dual_head import DualHeadMLP
from models.mlp import MLP
from models.registry import MODEL_CLASSES
from models.model_utils import (CHECKPOINT_FORMAT_VERSION, load_backbone_from_trained_mlp,
                                load_checkpoint, load_model, read_checkpoint_meta,
                                save_checkpoint, save_model, sidecar_path)

__all__ = ["MLP", "AlignHeteroMLP", "DualHeadMLP", "Backbone", "MODEL_CLASSES",
           "CHECKPOINT_FORMAT_VERSION", "load_backbone_from_trained_mlp", "save_checkpoint",
           "load_checkpoint", "read_checkpoint_meta", "save_model", "load_model", "sidecar_path"]
