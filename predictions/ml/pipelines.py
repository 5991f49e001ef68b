"""Candidate pipelines: scikit-learn estimators (ColumnTransformer + classifier).

Each candidate is built for a risk model's numeric and categorical features and follows
scikit-learn's conventions (clone, get_params/set_params, random_state everywhere). Numeric
features may be missing (NaN); categorical features are strings ("unknown" when missing).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import CategoricalNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from predictions.ml.definitions import RiskModelDefinition

# Category codes Naive Bayes can see per feature: the largest binned or encoded value + 1.
NB_CATEGORIES = 64
_NB_UNKNOWN = NB_CATEGORIES - 1


class QuantileBinner(TransformerMixin, BaseEstimator):
    """Numeric columns to integer bins at the training quantiles (ties merged); a missing value
    gets its own code, `n_bins`. Output is non-negative integers, as CategoricalNB needs."""

    def __init__(self, n_bins: int = 8):
        self.n_bins = n_bins

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        quantiles = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        self.edges_ = []
        for column in X.T:
            seen = column[~np.isnan(column)]
            edges = np.unique(np.quantile(seen, quantiles)) if len(seen) else np.array([])
            self.edges_.append(edges)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "edges_")
        X = np.asarray(X, dtype=float)
        codes = np.empty(X.shape, dtype=np.int64)
        for j, edges in enumerate(self.edges_):
            column = X[:, j]
            codes[:, j] = np.where(np.isnan(column), self.n_bins,
                                   np.searchsorted(edges, column, side="right"))
        return codes

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features if input_features is not None
                          else [f"x{i}" for i in range(self.n_features_in_)], dtype=object)


class EmptyColumnFiller(TransformerMixin, BaseEstimator):
    """Columns that are entirely missing at fit time become a constant 0 (histogram boosting
    cannot bin an all-missing column, e.g. a lab no training site records); other values,
    missing ones included, pass through."""

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        self.empty_ = np.isnan(X).all(axis=0) if X.size else np.zeros(X.shape[1], bool)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "empty_")
        X = np.array(X, dtype=float)
        X[:, self.empty_] = 0.0
        return X

    def get_feature_names_out(self, input_features=None):
        return np.asarray(input_features if input_features is not None
                          else [f"x{i}" for i in range(self.n_features_in_)], dtype=object)


def logistic(definition: RiskModelDefinition, *, C: float = 1.0, random_state: int = 0
             ) -> Pipeline:
    """L2-regularised logistic regression on standardised numerics (median-imputed, with a
    missing indicator) and one-hot categoricals."""
    columns = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                                keep_empty_features=True),
                                  StandardScaler()), list(definition.numeric_features)),
        ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=20,
                                      sparse_output=False), list(definition.categorical_features)),
    ])
    return Pipeline([("columns", columns),
                     ("model", LogisticRegression(C=C, max_iter=2000, random_state=random_state))])


def naive_bayes(definition: RiskModelDefinition, *, n_bins: int = 8, alpha: float = 1.0,
                random_state: int = 0) -> Pipeline:
    """Categorical Naive Bayes on quantile-binned numerics (missing is its own bin) and
    categoricals (unseen or rare categories share one code). NB has no randomness; the
    parameter is kept for a uniform interface."""
    del random_state
    columns = ColumnTransformer([
        ("numeric", QuantileBinner(n_bins=n_bins), list(definition.numeric_features)),
        ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value",
                                       unknown_value=_NB_UNKNOWN, min_frequency=20,
                                       max_categories=NB_CATEGORIES - 2),
         list(definition.categorical_features)),
    ])
    return Pipeline([("columns", columns),
                     ("model", CategoricalNB(alpha=alpha, min_categories=NB_CATEGORIES))])


def gradient_boosting(definition: RiskModelDefinition, *, learning_rate: float = 0.1,
                      max_leaf_nodes: int = 15, l2_regularization: float = 1.0,
                      max_iter: int = 400, random_state: int = 0) -> Pipeline:
    """Histogram gradient boosting with native missing values and categorical support, early
    stopping on a 10% validation split."""
    numeric = list(definition.numeric_features)
    categorical = list(definition.categorical_features)
    columns = ColumnTransformer([
        ("numeric", EmptyColumnFiller(), numeric),
        ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                       min_frequency=20), categorical),
    ])
    mask = [False] * len(numeric) + [True] * len(categorical)
    model = HistGradientBoostingClassifier(
        learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes, max_iter=max_iter,
        l2_regularization=l2_regularization, categorical_features=mask, early_stopping=True,
        validation_fraction=0.1, n_iter_no_change=10, random_state=random_state)
    return Pipeline([("columns", columns), ("model", model)])


# Algorithm name -> builder(definition, random_state=...).
CANDIDATES: dict[str, Callable[..., Pipeline]] = {
    "naive_bayes": naive_bayes,
    "logistic_regression": logistic,
    "gradient_boosting": gradient_boosting,
}


def build(algorithm: str, definition: RiskModelDefinition, *, random_state: int = 0) -> Pipeline:
    try:
        builder = CANDIDATES[algorithm]
    except KeyError:
        raise ValueError(f"Unknown algorithm {algorithm!r}; known: {', '.join(CANDIDATES)}.") \
            from None
    return builder(definition, random_state=random_state)
