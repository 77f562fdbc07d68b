"""Semi-automatic annotation: videos with masks, boxes+captions or boxes+expressions -> grounded GCG data.

Entry points: :class:`~training.annotate.pipeline.AnnotationPipeline` (or ``vglamm annotate``), then
:mod:`training.annotate.review` (export, accept/reject, finalize). See README.md in this folder.
"""
