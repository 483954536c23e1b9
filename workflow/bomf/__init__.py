"""BOMF: model fusion through Bayesian optimisation in language-model fine-tuning (Jang et al., NeurIPS 2024)."""
