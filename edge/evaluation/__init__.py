"""Evaluation of the edge pipeline on synthetic and recorded scenes (`tympan evaluate ...`).

Workstation-side tools: they run the device's own code on scenes with known truth and score it with the
field's metrics. Their extra dependencies (pyroomacoustics, sed_scores_eval, matplotlib) come with the
`eval` extra and are imported only when an evaluation runs, so the device install never needs them.
"""
