"""Stage 3 and the baselines on the same members: the registry of fusion methods (``fusion``), multi-objective
BO over the simplex (``mobo``) with its journal and Pareto-point rules, task-vector merges, the outer-loop and
oracle baselines, and the loss/metric landscape."""
