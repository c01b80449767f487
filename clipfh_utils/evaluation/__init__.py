"""Evaluation: the pure rank kernels and the protocol evaluator (`rank`), the camera-aware person
ReID kernel (`person`), and the spread of their numbers over splits, seeds and identities (`spread`)."""
from .person import counted_gallery, person_metrics
from .rank import METRICS, PROTOCOLS, FeatureBank, cmc_from_ranks, evaluate_protocol, rank_metrics
from .spread import (Interval, IdentityScores, bootstrap_weights, identity_bootstrap, identity_scores,
                     paired_bootstrap, query_values, seed_split_sd, summarize)

__all__ = ["counted_gallery", "person_metrics", "METRICS", "PROTOCOLS", "FeatureBank", "cmc_from_ranks", "evaluate_protocol", "rank_metrics",
           "Interval", "IdentityScores", "bootstrap_weights", "identity_bootstrap", "identity_scores",
           "paired_bootstrap", "query_values", "seed_split_sd", "summarize"]
