"""The risk models' core: plain pandas, numpy and scikit-learn, no Django.

- definitions: the CINV and neutropenia models (target, features, tiers, tier_of)
- features: the per-cycle feature matrix and targets from the registry's frames
- pipelines: candidate scikit-learn pipelines (Naive Bayes, logistic regression, boosting)
- evaluation: metrics, leave-site-out and ordinary cross-validation, recalibration
- training: train() -> TrainingResult, artifacts with SHA-256, explain()
- quality: the quality bar against the synthetic cohort's true probabilities
"""
