"""Video and mask I/O: decoding, sampling, writing videos; RLE, JSON and PNG mask formats; overlays.

Names are resolved on first use so that importing ``vglamm.io.atomic`` stays light.
"""

from __future__ import annotations

from vglamm._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Video", "VideoInfo", "load_video", "iter_video", "probe_video", "write_video", "exact_rate"],
                    "vglamm.io.video"),
    **dict.fromkeys(["uniform_indices", "fps_indices", "segment_indices"], "vglamm.io.sampling"),
    **dict.fromkeys(["encode_rle", "decode_rle", "masks_to_rles", "rles_to_masks", "save_rle_json", "load_rle_json",
                     "davis_palette", "save_davis_pngs", "load_davis_pngs", "labels_to_objects", "objects_to_labels",
                     "save_binary_pngs", "load_binary_pngs", "save_submission_pngs", "load_submission_pngs"],
                    "vglamm.io.masks"),
    **dict.fromkeys(["write_overlay_video", "draw_overlay"], "vglamm.io.overlay"),
    **dict.fromkeys(["atomic_path", "refuse_overwrite", "write_text_atomic", "write_bytes_atomic"], "vglamm.io.atomic"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
