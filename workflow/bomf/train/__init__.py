"""Stage 1 (hyperparameter BO on the proxy, ``hpo``) and stage 2 (the fine-tune that keeps the members,
``members``; a user's own checkpoints as members, ``checkpoints``), on the one training recipe, ``training``."""
