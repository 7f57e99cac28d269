"""Training: corrected labels in, a fine-tuned and checked model version out (no Qt).

``border_weights`` (Eq. 2, with ``_distances``) and ``samples`` make the targets,
``augment`` (with ``_resample``) deforms them, ``train`` runs the steps, ``anchoring`` keeps
the model's predictions elsewhere, ``loop`` is one round and ``selfcheck`` its check.
"""
