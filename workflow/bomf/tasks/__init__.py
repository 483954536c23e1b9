"""The data and model side every stage shares: the task registry, the readers of raw files, the split
protocol, the task kinds (classification and regression, extractive QA, LoRA generation) with their
evaluation loop, text metrics, and what each kind does with a model."""
