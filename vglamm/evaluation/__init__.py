"""Evaluation metrics: J/F and the DAVIS protocols, MeViS, GCG (mIoU, recall, captions), VidSTG grounding.

Names resolve on first use so that importing this package stays cheap (no torch, no Java).
"""

from __future__ import annotations

from vglamm._lazy import lazy_exports

_EXPORTS = {
    # video object segmentation (DAVIS toolkit definitions)
    "region_similarity": "vglamm.evaluation.vos",
    "boundary_f": "vglamm.evaluation.vos",
    "db_statistics": "vglamm.evaluation.vos",
    "evaluate_sequence": "vglamm.evaluation.vos",
    "evaluate_vos": "vglamm.evaluation.vos",
    # MeViS
    "evaluate_mevis": "vglamm.evaluation.mevis",
    "mevis_ground_truth": "vglamm.evaluation.mevis",
    "write_mevis_submission": "vglamm.evaluation.mevis",
    # grounded conversation generation
    "gcg_miou": "vglamm.evaluation.gcg",
    "gcg_recall_matches": "vglamm.evaluation.gcg",
    "evaluate_gcg": "vglamm.evaluation.gcg",
    "GCGRecord": "vglamm.evaluation.gcg",
    "caption_metrics": "vglamm.evaluation.captions",
    "clair_score": "vglamm.evaluation.captions",
    "ClairJudge": "vglamm.evaluation.captions",
    "PhraseEncoder": "vglamm.evaluation.phrase_encoders",
    "BagOfWordsEncoder": "vglamm.evaluation.phrase_encoders",
    "TransformersPhraseEncoder": "vglamm.evaluation.phrase_encoders",
    "load_phrase_encoder": "vglamm.evaluation.phrase_encoders",
    # spatio-temporal grounding
    "masks_to_boxes": "vglamm.evaluation.grounding",
    "box_iou": "vglamm.evaluation.grounding",
    "evaluate_grounding": "vglamm.evaluation.grounding",
    "GroundingRecord": "vglamm.evaluation.grounding",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
